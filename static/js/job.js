/*
 * Live job page. Protocol on /ws/jobs/<id>/: first {"type": "snapshot", "job", "results"},
 * then {"type": "progress", "job", "results": [new rows]}. The page renders the
 * snapshot (again after every reconnect, so its numbers equal the API's), then
 * applies events.
 *
 * Results: an in-memory list, newest first, for the current filter and search;
 * only the rows in view (plus a margin) are in the DOM, so 100k URLs scroll as
 * fast as 100. Older rows are read from GET <results>?order=newest&before= when
 * the list is scrolled near its end. Streamed rows that match the filter are
 * prepended. Charts come from GET <stats> (one GROUP BY each), polled while the
 * job runs.
 */
(function () {
  "use strict";

  var B = window.Batchfetch;
  var root = document.getElementById("job-page");
  if (!root) {
    return;
  }

  var RATE_WINDOW_MS = 10000; // "now" = URLs fetched over the last 10 s
  var ANNOUNCE_INTERVAL_MS = 5000; // the aria-live summary speaks at most this often
  var STATS_INTERVAL_MS = 2000; // charts refresh while the job runs
  var STATS_GAP_MS = 500; // at least this long between two stats reads that follow the counters
  var PAGE_SIZE = 200; // rows per API page
  var ROW_HEIGHT = 32; // px; .results-scroll rows have this fixed height (app.css)
  var OVERSCAN = 10; // rows rendered above and below the visible ones
  var LIST_MAX = 20000; // rows kept in memory; older ones are read again from the API on demand
  var SEARCH_DELAY_MS = 300;
  var SVG_NS = "http://www.w3.org/2000/svg";

  function $(id) {
    return document.getElementById(id);
  }

  var urls = {
    cancel: root.getAttribute("data-cancel-url"),
    pause: root.getAttribute("data-pause-url"),
    resume: root.getAttribute("data-resume-url"),
    rerun: root.getAttribute("data-rerun-url"),
    stats: root.getAttribute("data-stats-url"),
    results: root.getAttribute("data-results-url"),
    jobPage: root.getAttribute("data-job-url"),
    row: root.getAttribute("data-row-url"),
  };
  var el = {
    status: $("job-status"),
    progress: $("job-progress"),
    percent: $("job-percent"),
    summary: $("job-summary"),
    summaryLive: $("job-summary-live"),
    succeeded: $("stat-succeeded"),
    failed: $("stat-failed"),
    pending: $("stat-pending"),
    cancelled: $("stat-cancelled"),
    total: $("stat-total"),
    rate: $("stat-rate"),
    average: $("stat-average"),
    elapsed: $("stat-elapsed"),
    eta: $("stat-eta"),
    started: $("stat-started"),
    finished: $("stat-finished"),
    error: $("job-error"),
    progressCancelled: $("job-progress-cancelled"),
    cancelForm: $("cancel-form"),
    cancelButton: $("cancel-button"),
    pauseButton: $("pause-button"),
    rerunButton: $("rerun-button"),
    actionMessage: $("action-message"),
    chart: $("throughput-chart"),
    chartDesc: $("throughput-desc"),
    breakdown: $("breakdown"),
    breakdownEmpty: $("breakdown-empty"),
    filter: $("results-filter"),
    search: $("results-search"),
    count: $("results-count"),
    scroll: $("results-scroll"),
    results: $("results-body"),
    resultsEmpty: $("results-empty"),
    connection: $("connection"),
  };

  var job = JSON.parse($("job-data").textContent);
  var samples = []; // [{t, fetched}] for the current rate, client clock only (no server skew)
  var lastAnnouncedAt = 0;
  var announceTimer = null;
  var busy = false; // a control request is in flight
  var breakdown = { status_codes: [], errors: [] };
  var snapshots = 0;

  function done(j) {
    return j.done !== undefined ? j.done : j.succeeded + j.failed + j.cancelled;
  }

  /* URLs really fetched: the rate leaves out cancelled ones, which finish all at once without a request. */
  function fetched(j) {
    return j.succeeded + j.failed;
  }

  function active(status) {
    return status === "running" || status === "cancelling" || status === "pausing";
  }

  /* ---- Rate, elapsed, ETA ---- */

  function addSample() {
    var now = performance.now();
    samples.push({ t: now, fetched: fetched(job) });
    while (samples.length > 2 && now - samples[0].t > RATE_WINDOW_MS) {
      samples.shift();
    }
  }

  function elapsedSeconds() {
    if (!job.started_at) {
      return null;
    }
    var end = job.finished_at ? Date.parse(job.finished_at) : Date.now();
    return Math.max(0, (end - Date.parse(job.started_at)) / 1000);
  }

  function averageRate() {
    var seconds = elapsedSeconds();
    return seconds && seconds > 1 ? fetched(job) / seconds : null;
  }

  /** URLs per second over the last few seconds, or null when unknown or not running. */
  function currentRate() {
    if (!active(job.status)) {
      return null;
    }
    var first = samples[0];
    var last = samples[samples.length - 1];
    if (first && last && last.t - first.t >= 1000) {
      return ((last.fetched - first.fetched) * 1000) / (last.t - first.t);
    }
    return averageRate(); // just connected
  }

  function formatRate(rate) {
    return rate === null ? "—" : rate.toFixed(rate < 10 ? 1 : 0) + " URLs/s";
  }

  function renderRate() {
    var rate = currentRate();
    var average = averageRate();
    el.rate.textContent = formatRate(rate);
    el.average.textContent = formatRate(average);
    var seconds = elapsedSeconds();
    el.elapsed.textContent = seconds === null ? "—" : B.formatDuration(seconds);
    var speed = rate || average;
    if (B.isTerminal(job.status)) {
      el.eta.textContent = "Done";
    } else if (job.status === "paused" || job.status === "pausing") {
      el.eta.textContent = "Paused";
    } else if (job.status === "running" && speed) {
      el.eta.textContent = B.formatDuration((job.total - done(job)) / speed);
    } else {
      el.eta.textContent = "—";
    }
  }

  /* ---- Summary ---- */

  /* "7 of 60 URLs fetched (11%), 53 cancelled" once some were cancelled; else "45 of 60 URLs done (75%)". */
  function summaryText() {
    var n = fetched(job);
    var text = B.formatNumber(n) + " of " + B.formatNumber(job.total);
    if (job.cancelled) {
      text += " URLs fetched (" + B.percent(n, job.total) + "%), " + B.formatNumber(job.cancelled) + " cancelled";
    } else {
      text += " URLs done (" + B.percent(n, job.total) + "%)";
    }
    if (job.status !== "running" && job.status !== "queued") {
      text += " · " + B.statusLabel(job.status);
    }
    return text;
  }

  /* The visible summary follows every update. Its aria-live twin speaks at
     most every few seconds (and at once on a status change), so a screen
     reader is not flooded by 10 updates a second. */
  function announce(force) {
    var now = performance.now();
    if (force || now - lastAnnouncedAt >= ANNOUNCE_INTERVAL_MS) {
      if (announceTimer !== null) {
        window.clearTimeout(announceTimer);
        announceTimer = null;
      }
      lastAnnouncedAt = now;
      el.summaryLive.textContent = summaryText();
    } else if (announceTimer === null) {
      announceTimer = window.setTimeout(function () {
        announceTimer = null;
        announce(true);
      }, ANNOUNCE_INTERVAL_MS - (now - lastAnnouncedAt));
    }
  }

  function renderJob(previousStatus) {
    var n = done(job);
    // The bar and the percentage count the URLs fetched; cancelled ones show as their own segment.
    var pct = B.setProgress(el.progress, fetched(job), job.total);
    el.percent.textContent = pct + "%";
    el.progressCancelled.hidden = !job.cancelled;
    el.progressCancelled.style.width = job.total ? (100 * job.cancelled) / job.total + "%" : "0";
    el.progressCancelled.title = B.formatNumber(job.cancelled) + " cancelled";
    el.status.className = "status status--" + job.status;
    el.status.textContent = B.statusLabel(job.status);
    el.succeeded.textContent = B.formatNumber(job.succeeded);
    el.failed.textContent = B.formatNumber(job.failed);
    el.pending.textContent = B.formatNumber(job.total - n);
    el.cancelled.textContent = B.formatNumber(job.cancelled);
    el.total.textContent = B.formatNumber(job.total);
    B.setTime(el.started, job.started_at);
    B.setTime(el.finished, job.finished_at);
    el.error.textContent = job.error || "";
    el.error.hidden = !job.error;
    renderControls();
    renderRate();
    renderCount();
    el.summary.textContent = summaryText();
    if (previousStatus !== undefined) {
      announce(previousStatus !== job.status);
    }
  }

  function renderControls() {
    var terminal = B.isTerminal(job.status);
    el.cancelForm.hidden = terminal; // nothing left to cancel
    el.cancelButton.disabled = terminal || job.status === "cancelling" || busy;
    var pausable = job.status === "queued" || job.status === "running";
    var resumable = job.status === "paused" || job.status === "pausing";
    el.pauseButton.hidden = !(pausable || resumable);
    el.pauseButton.disabled = busy;
    el.pauseButton.textContent = resumable ? "Resume" : "Pause";
    el.pauseButton.setAttribute("data-action", resumable ? "resume" : "pause");
    el.rerunButton.hidden = !(job.failed > 0);
    el.rerunButton.disabled = busy;
  }

  /* ---- Results: a newest-first list for the current filter, rendered as a window ---- */

  var list = []; // result dicts, newest first
  var listed = new Set(); // positions in `list`
  var exhausted = false; // the API has no older rows for this filter
  var loading = null; // the filter key of the page request in flight
  var renderPending = false;

  function filterKey() {
    return el.filter.value + "\u0000" + el.search.value.trim();
  }

  function matches(result) {
    if (result.outcome !== "succeeded" && result.outcome !== "failed") {
      return false; // pending rows have not arrived; cancelled ones are counted above, not listed
    }
    var value = el.filter.value;
    if (value === "failed" && result.outcome !== "failed") {
      return false;
    }
    if (value.indexOf("code:") === 0 && String(result.status_code) !== value.slice(5)) {
      return false;
    }
    var q = el.search.value.trim().toLowerCase();
    return !q || result.url.toLowerCase().indexOf(q) !== -1;
  }

  function timeValue(iso) {
    var t = iso ? Date.parse(iso) : NaN;
    return isNaN(t) ? 0 : t;
  }

  function newestFirst(a, b) {
    return timeValue(b.fetched_at) - timeValue(a.fetched_at) || b.position - a.position;
  }

  function cell(text, className) {
    var td = document.createElement("td");
    if (className) {
      td.className = className;
    }
    td.textContent = text === null || text === undefined ? "" : String(text);
    return td;
  }

  /* Same cells as the server-rendered rows in templates/jobs/job_detail.html. */
  function buildResultRow(result) {
    var tr = document.createElement("tr");
    tr.setAttribute("data-position", String(result.position));
    tr.tabIndex = 0; // Enter opens the detail (resultdetail.js)
    tr.title = "Show the details of this result";
    var number = cell("", "num");
    var link = document.createElement("a");
    link.href = urls.row + result.position + "/"; // the row's page (request, response, saved JSON body)
    link.textContent = B.formatNumber(result.position);
    number.appendChild(link);
    tr.appendChild(number);
    var url = cell(result.url, "results__url");
    url.title = result.url;
    tr.appendChild(url);
    var outcome = document.createElement("td");
    var badge = document.createElement("span");
    badge.className = "outcome outcome--" + result.outcome;
    badge.textContent = result.outcome;
    outcome.appendChild(badge);
    tr.appendChild(outcome);
    tr.appendChild(cell(result.status_code, "num"));
    tr.appendChild(cell(result.bytes === null ? "" : B.formatNumber(result.bytes), "num"));
    tr.appendChild(cell(result.elapsed_ms === null ? "" : B.formatNumber(result.elapsed_ms), "num"));
    var error = cell(result.error, "results__error");
    error.title = result.error || "";
    tr.appendChild(error);
    return tr;
  }

  function spacer(rows) {
    var tr = document.createElement("tr");
    tr.className = "results__spacer";
    tr.setAttribute("aria-hidden", "true");
    var td = document.createElement("td");
    td.colSpan = 7;
    td.style.height = rows * ROW_HEIGHT + "px";
    tr.appendChild(td);
    return tr;
  }

  function scheduleRender() {
    if (!renderPending) {
      renderPending = true;
      window.requestAnimationFrame(renderWindow);
    }
  }

  /* Only the rows in view, plus OVERSCAN on each side, between two spacers that keep the scroll height. */
  function renderWindow() {
    renderPending = false;
    var view = el.scroll.clientHeight || ROW_HEIGHT * 15;
    var first = Math.max(0, Math.floor(el.scroll.scrollTop / ROW_HEIGHT) - OVERSCAN);
    var last = Math.min(list.length, first + Math.ceil(view / ROW_HEIGHT) + 2 * OVERSCAN);
    var rows = [];
    if (first > 0) {
      rows.push(spacer(first));
    }
    for (var i = first; i < last; i++) {
      rows.push(buildResultRow(list[i]));
    }
    if (last < list.length) {
      rows.push(spacer(list.length - last));
    }
    el.results.replaceChildren.apply(el.results, rows);
    el.resultsEmpty.hidden = list.length > 0 || loading !== null;
    el.resultsEmpty.textContent = filterKey() === "all\u0000" ? "No results yet." : "No matching results.";
    if (last >= list.length - OVERSCAN && !exhausted && loading === null) {
      loadOlder();
    }
  }

  /* How many rows match, where the counters tell; else how many are loaded. */
  function renderCount() {
    var value = el.filter.value;
    var known = null;
    if (!el.search.value.trim()) {
      if (value === "all") {
        known = fetched(job);
      } else if (value === "failed") {
        known = job.failed;
      } else {
        breakdown.status_codes.forEach(function (item) {
          if ("code:" + item.code === value) {
            known = item.count;
          }
        });
      }
    }
    var text;
    if (known !== null) {
      text = B.formatNumber(known) + (known === 1 ? " row" : " rows");
    } else {
      text = B.formatNumber(list.length) + (exhausted ? "" : "+") + " matching rows";
    }
    el.count.textContent = text;
  }

  function resetList() {
    list = [];
    listed = new Set();
    exhausted = false;
    loading = null;
    el.scroll.scrollTop = 0;
    renderCount();
    scheduleRender();
  }

  function addRows(rows, prepend) {
    var added = 0;
    for (var i = 0; i < rows.length; i++) {
      var result = rows[i];
      if (listed.has(result.position) || !matches(result)) {
        continue;
      }
      listed.add(result.position);
      if (prepend) {
        list.unshift(result);
      } else {
        list.push(result);
      }
      added += 1;
    }
    return added;
  }

  function trimList() {
    if (list.length > LIST_MAX) {
      list.splice(LIST_MAX).forEach(function (result) {
        listed.delete(result.position);
      });
      exhausted = false;
    }
  }

  /* Streamed rows are newer than everything listed; within a message they come oldest first. */
  function applyResults(results) {
    var added = addRows(results, true); // each unshifted in turn: the newest ends on top
    if (added) {
      // Someone reading further down keeps their rows in place instead of being pushed down.
      if (el.scroll.scrollTop > 0) {
        el.scroll.scrollTop += added * ROW_HEIGHT;
      }
      trimList();
      scheduleRender();
      renderCount();
    }
  }

  function resultsQuery(before) {
    var value = el.filter.value;
    var params = new URLSearchParams({ order: "newest", limit: String(PAGE_SIZE) });
    params.set("outcome", value === "failed" ? "failed" : "succeeded,failed");
    if (value.indexOf("code:") === 0) {
      params.set("status_code", value.slice(5));
    }
    var q = el.search.value.trim();
    if (q) {
      params.set("q", q);
    }
    if (before !== null) {
      params.set("before", String(before));
    }
    return urls.results + "?" + params.toString();
  }

  /* The next page older than the last listed row (or the newest page when the list is empty). */
  function loadOlder() {
    var key = filterKey();
    var before = list.length ? list[list.length - 1].position : null;
    loading = key;
    fetch(resultsQuery(before), { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        return response.ok ? response.json() : Promise.reject(new Error("HTTP " + response.status));
      })
      .then(function (data) {
        if (loading !== key || filterKey() !== key) {
          return; // the filter changed meanwhile; that request is obsolete
        }
        loading = null;
        var rows = data.results || [];
        // The page and streamed rows may overlap, and rows streamed meanwhile are newer: merge and sort.
        addRows(rows, false);
        list.sort(newestFirst);
        exhausted = !data.next;
        trimList();
        renderCount();
        scheduleRender();
      })
      .catch(function () {
        if (loading === key) {
          loading = null;
          // Try again on the next scroll or update rather than in a tight loop.
          window.setTimeout(scheduleRender, 2000);
        }
      });
  }

  var searchTimer = null;
  el.filter.addEventListener("change", resetList);
  el.search.addEventListener("input", function () {
    if (searchTimer !== null) {
      window.clearTimeout(searchTimer);
    }
    searchTimer = window.setTimeout(function () {
      searchTimer = null;
      resetList();
    }, SEARCH_DELAY_MS);
  });
  el.scroll.addEventListener("scroll", scheduleRender, { passive: true });
  window.addEventListener("resize", scheduleRender);

  /* ---- Charts ---- */

  function svg(name, attrs, text) {
    var node = document.createElementNS(SVG_NS, name);
    Object.keys(attrs).forEach(function (key) {
      node.setAttribute(key, String(attrs[key]));
    });
    if (text !== undefined) {
      node.textContent = text;
    }
    return node;
  }

  /* Bars of URLs/s over the job's life, at most 60 buckets (seconds grouped as the job gets longer). */
  function renderThroughput(points) {
    var chart = el.chart;
    var width = 600;
    var height = 160;
    var axis = 2;
    if (!points.length) {
      chart.replaceChildren();
      el.chartDesc.textContent = "No URLs fetched yet.";
      return;
    }
    var start = Math.floor(Date.parse(job.started_at || points[0].t) / 1000);
    var end = Math.max(
      Math.floor(Date.parse(points[points.length - 1].t) / 1000),
      job.finished_at ? Math.floor(Date.parse(job.finished_at) / 1000) : 0
    );
    var span = Math.max(1, end - start + 1);
    var bucket = Math.max(1, Math.ceil(span / 60));
    var buckets = new Array(Math.ceil(span / bucket)).fill(0);
    points.forEach(function (point) {
      var index = Math.floor((Math.floor(Date.parse(point.t) / 1000) - start) / bucket);
      if (index >= 0 && index < buckets.length) {
        buckets[index] += point.n;
      }
    });
    var rates = buckets.map(function (n) {
      return n / bucket;
    });
    var peak = Math.max.apply(null, rates) || 1;
    // At least 30 slots, so the first seconds of a job show as narrow bars growing to the right.
    var barWidth = width / Math.max(30, rates.length);
    var nodes = [svg("line", { x1: 0, y1: height - axis, x2: width, y2: height - axis, class: "chart__axis" })];
    rates.forEach(function (rate, i) {
      var h = ((height - axis - 4) * rate) / peak;
      var bar = svg("rect", {
        x: (i * barWidth + 0.5).toFixed(1),
        y: (height - axis - h).toFixed(1),
        width: Math.max(1, barWidth - 1).toFixed(1),
        height: h.toFixed(1),
        class: "chart__bar",
      });
      bar.appendChild(svg("title", {}, B.formatDuration(i * bucket) + ": " + rate.toFixed(1) + " URLs/s"));
      nodes.push(bar);
    });
    // Labels live in the caption below: text inside a stretched (preserveAspectRatio=none) SVG would be distorted.
    chart.replaceChildren.apply(chart, nodes);
    var total = points.reduce(function (sum, point) {
      return sum + point.n;
    }, 0);
    el.chartDesc.textContent =
      B.formatNumber(total) +
      " URLs fetched over " +
      B.formatDuration(span) +
      (bucket > 1 ? " (bars of " + bucket + " s)" : "") +
      "; peak " +
      peak.toFixed(1) +
      " URLs/s.";
  }

  function breakdownItem(label, count, max, kind) {
    var li = document.createElement("li");
    li.className = "breakdown__item breakdown__item--" + kind;
    var name = document.createElement("span");
    name.className = "breakdown__label";
    name.textContent = label;
    var bar = document.createElement("span");
    bar.className = "breakdown__bar";
    bar.setAttribute("aria-hidden", "true");
    var fill = document.createElement("span");
    fill.style.width = Math.max(2, Math.round((100 * count) / max)) + "%";
    bar.appendChild(fill);
    var value = document.createElement("span");
    value.className = "breakdown__count num";
    value.textContent = B.formatNumber(count);
    li.appendChild(name);
    li.appendChild(bar);
    li.appendChild(value);
    return li;
  }

  function renderBreakdown() {
    var items = [];
    var max = 1;
    breakdown.status_codes.concat(breakdown.errors).forEach(function (item) {
      max = Math.max(max, item.count);
    });
    breakdown.status_codes.forEach(function (item) {
      var kind = item.code >= 400 ? "bad" : "ok";
      items.push(breakdownItem("HTTP " + item.code, item.count, max, kind));
    });
    breakdown.errors.forEach(function (item) {
      if (item["class"] !== "http_status") {
        items.push(breakdownItem(item["class"] + " errors", item.count, max, "bad"));
      }
    });
    el.breakdown.replaceChildren.apply(el.breakdown, items);
    el.breakdownEmpty.hidden = items.length > 0;
    renderFilterOptions();
  }

  /* One "Status NNN" filter option per status code seen; the current choice is kept. */
  function renderFilterOptions() {
    var current = el.filter.value;
    var wanted = breakdown.status_codes.map(function (item) {
      return "code:" + item.code;
    });
    if (current.indexOf("code:") === 0 && wanted.indexOf(current) === -1) {
      wanted.push(current);
    }
    wanted.sort();
    var existing = Array.prototype.slice.call(el.filter.options, 2).map(function (option) {
      return option.value;
    });
    if (existing.join() === wanted.join()) {
      return;
    }
    while (el.filter.options.length > 2) {
      el.filter.remove(2);
    }
    wanted.forEach(function (value) {
      var option = document.createElement("option");
      option.value = value;
      option.textContent = "Status " + value.slice(5);
      el.filter.appendChild(option);
    });
    el.filter.value = current;
  }

  var statsTimer = null;
  var statsLoading = false;
  var statsFetched = -1; // URLs fetched as of the last stats answer
  var statsAgain = null; // a timer for the next read, when the counters moved past the last answer
  var statsLoadedAt = 0;

  /* The charts are as of one moment of the API's (api_live._stats). When the counters have moved
     past that moment, read them again soon, so the charts catch up with the counters instead of
     lagging until the next poll. */
  function followCounters() {
    if (statsFetched === fetched(job) || statsAgain !== null) {
      return;
    }
    var wait = Math.max(0, STATS_GAP_MS - (performance.now() - statsLoadedAt));
    statsAgain = window.setTimeout(function () {
      statsAgain = null;
      loadStats();
    }, wait);
  }

  function loadStats() {
    if (statsLoading) {
      return;
    }
    statsLoading = true;
    statsLoadedAt = performance.now();
    fetch(urls.stats, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        return response.ok ? response.json() : Promise.reject(new Error("HTTP " + response.status));
      })
      .then(function (data) {
        breakdown = { status_codes: data.status_codes || [], errors: data.errors || [] };
        statsFetched = data.job ? fetched(data.job) : -1;
        if (data.job && data.job.id === job.id && !B.isStale(job, data.job)) {
          updateJob(data.job); // newer than the socket's last word: show the counters of this same moment
        }
        renderBreakdown();
        renderThroughput(data.throughput || []);
        renderCount();
        document.dispatchEvent(new CustomEvent("batchfetch:stats", { detail: data })); // hosts.js
      })
      .catch(function () {})
      .then(function () {
        statsLoading = false;
        if (active(job.status) || statsFetched !== fetched(job)) {
          followCounters();
        }
      });
  }

  function pollStats() {
    if (statsTimer === null && !B.isTerminal(job.status)) {
      statsTimer = window.setInterval(function () {
        if (!document.hidden && active(job.status)) {
          loadStats();
        }
      }, STATS_INTERVAL_MS);
    }
  }

  /* ---- Messages ---- */

  function updateJob(next) {
    var previousStatus = job.status;
    job = next;
    addSample();
    renderJob(previousStatus);
    if (B.isTerminal(job.status)) {
      stopTicking();
    }
    if (previousStatus !== job.status) {
      loadStats(); // e.g. the final charts, or the state a pause left
    } else if (!statsLoading) {
      followCounters();
    }
  }

  function onMessage(message) {
    if (message.type === "snapshot" && message.job) {
      snapshots += 1;
      updateJob(message.job);
      if (snapshots > 1) {
        // Reconnected: rows streamed while we were away were missed; read the list again.
        resetList();
      } else {
        applyResults(Array.isArray(message.results) ? message.results.slice().reverse() : []);
      }
      loadStats();
      socket.healthy();
    } else if (message.type === "progress" && message.job) {
      applyResults(Array.isArray(message.results) ? message.results : []);
      if (!B.isStale(job, message.job)) {
        updateJob(message.job);
      }
    } else if (message.type === "error") {
      showActionMessage("The server reported an error: " + JSON.stringify(message.errors || message));
    }
  }

  /* ---- Controls ---- */

  function showActionMessage(text) {
    el.actionMessage.textContent = text;
  }

  function csrfToken() {
    var input = el.cancelForm.querySelector("input[name=csrfmiddlewaretoken]");
    return input ? input.value : "";
  }

  function post(url) {
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "X-CSRFToken": csrfToken(), Accept: "application/json" },
    }).then(function (response) {
      return response.json().then(
        function (data) {
          return { ok: response.ok, status: response.status, data: data };
        },
        function () {
          return { ok: response.ok, status: response.status, data: {} };
        }
      );
    });
  }

  /* Run one control request; `done(result)` handles the answer. */
  function control(url, pendingText, handle, onNetworkError) {
    busy = true;
    renderControls();
    showActionMessage(pendingText);
    post(url)
      .then(function (result) {
        busy = false;
        if (!result.ok) {
          showActionMessage(result.data.error || "The request failed (HTTP " + result.status + ").");
        } else {
          handle(result.data);
        }
        renderControls();
      })
      .catch(function () {
        busy = false;
        renderControls();
        if (!onNetworkError || !onNetworkError()) {
          showActionMessage("Could not reach the server; try again in a moment.");
        }
      });
  }

  /* The socket may already have delivered a later state; never step back from a terminal one. */
  function acceptJob(data) {
    if (data && data.id === job.id && data.status && !B.isTerminal(job.status)) {
      updateJob(data);
    }
  }

  el.cancelForm.addEventListener("submit", function (event) {
    event.preventDefault();
    if (el.cancelButton.disabled) {
      return;
    }
    var left = job.total - done(job);
    var question =
      "Cancel this job? " +
      B.formatNumber(left) +
      (left === 1 ? " URL" : " URLs") +
      " not fetched yet will be recorded as cancelled; this cannot be undone.";
    if (!window.confirm(question)) {
      return;
    }
    control(
      urls.cancel,
      "Cancelling…",
      function (data) {
        showActionMessage("Cancel requested.");
        acceptJob(data);
      },
      // The API is unreachable: ask over the socket instead.
      function () {
        if (socket.send({ type: "cancel" })) {
          showActionMessage("Cancel requested.");
          return true;
        }
        return false;
      }
    );
  });

  el.pauseButton.addEventListener("click", function () {
    var resume = el.pauseButton.getAttribute("data-action") === "resume";
    control(resume ? urls.resume : urls.pause, resume ? "Resuming…" : "Pausing…", function (data) {
      showActionMessage(
        resume ? "Resumed." : "Pause requested: requests in flight finish, no new ones start."
      );
      acceptJob(data);
    });
  });

  el.rerunButton.addEventListener("click", function () {
    control(urls.rerun, "Starting a new job with the failed URLs…", function (data) {
      showActionMessage("Started a new job with " + B.formatNumber(data.total) + " URLs; opening it…");
      window.location.assign(urls.jobPage.replace("00000000-0000-0000-0000-000000000000", data.id));
    });
  });

  /* ---- Ticking: keep rate, elapsed and ETA honest between messages (a stall shows as a falling rate). ---- */

  var ticker = null;

  function startTicking() {
    if (ticker === null && !B.isTerminal(job.status)) {
      ticker = window.setInterval(function () {
        addSample();
        renderRate();
      }, 1000);
    }
  }

  function stopTicking() {
    if (ticker !== null) {
      window.clearInterval(ticker);
      ticker = null;
    }
    if (statsTimer !== null) {
      window.clearInterval(statsTimer);
      statsTimer = null;
    }
  }

  var socket = new B.LiveSocket(root.getAttribute("data-ws-path"), {
    onMessage: onMessage,
    onState: function (state, info) {
      B.showConnection(el.connection, state, info, "Job finished; live updates stopped");
    },
    // Once the job is terminal the last message has arrived; nothing more to wait for.
    shouldReconnect: function () {
      return !B.isTerminal(job.status);
    },
  });

  B.localizeTimes(document);
  addSample();
  renderJob(undefined); // first render: nothing new to announce
  // The server-rendered rows are the no-JavaScript view; the list below replaces them.
  resetList();
  startTicking();
  pollStats();
  loadStats();
  socket.start();
})();
