/*
 * Live job page. Protocol on /ws/jobs/<id>/: first {"type": "snapshot", "job", "results"},
 * then {"type": "progress", "job", "results": [new rows]}. The page renders the
 * snapshot (again after every reconnect), then applies events; result rows are
 * deduplicated by position, newest first, at most data-max-rows in the DOM.
 * Final rows never change, so a snapshot's rows are merged with those shown.
 */
(function () {
  "use strict";

  var B = window.Batchfetch;
  var root = document.getElementById("job-page");
  if (!root) {
    return;
  }

  var RATE_WINDOW_MS = 10000; // rate = URLs done over the last 10 s
  var ANNOUNCE_INTERVAL_MS = 5000; // the aria-live summary speaks at most this often

  var maxRows = parseInt(root.getAttribute("data-max-rows"), 10) || 500;
  var cancelUrl = root.getAttribute("data-cancel-url");
  var el = {
    status: document.getElementById("job-status"),
    progress: document.getElementById("job-progress"),
    summary: document.getElementById("job-summary"),
    summaryLive: document.getElementById("job-summary-live"),
    done: document.getElementById("stat-done"),
    succeeded: document.getElementById("stat-succeeded"),
    failed: document.getElementById("stat-failed"),
    cancelled: document.getElementById("stat-cancelled"),
    total: document.getElementById("stat-total"),
    rate: document.getElementById("stat-rate"),
    eta: document.getElementById("stat-eta"),
    started: document.getElementById("stat-started"),
    finished: document.getElementById("stat-finished"),
    error: document.getElementById("job-error"),
    cancelForm: document.getElementById("cancel-form"),
    cancelButton: document.getElementById("cancel-button"),
    actionMessage: document.getElementById("action-message"),
    results: document.getElementById("results-body"),
    resultsEmpty: document.getElementById("results-empty"),
    connection: document.getElementById("connection"),
  };

  var job = JSON.parse(document.getElementById("job-data").textContent);
  var seen = new Set(); // positions already handled: shown, trimmed, or not listed (cancelled)
  var entries = new Map(); // position -> {position, fetchedAt, tr} for the rows in the table
  var samples = []; // [{t, fetched}] for the rate, client clock only (no server skew)
  var lastAnnouncedAt = 0;
  var announceTimer = null;
  var cancelRequested = false;

  function done(j) {
    return j.done !== undefined ? j.done : j.succeeded + j.failed + j.cancelled;
  }

  /* URLs really fetched: the rate leaves out cancelled ones, which finish all at once without a request. */
  function fetched(j) {
    return j.succeeded + j.failed;
  }

  /* ---- Rate and ETA ---- */

  function addSample() {
    var now = performance.now();
    samples.push({ t: now, fetched: fetched(job) });
    while (samples.length > 2 && now - samples[0].t > RATE_WINDOW_MS) {
      samples.shift();
    }
  }

  /** URLs per second, or null when unknown. */
  function currentRate() {
    if (B.isTerminal(job.status)) {
      if (job.started_at && job.finished_at) {
        var seconds = (Date.parse(job.finished_at) - Date.parse(job.started_at)) / 1000;
        return seconds > 0 ? fetched(job) / seconds : null;
      }
      return null;
    }
    if (job.status !== "running" && job.status !== "cancelling") {
      return null;
    }
    var first = samples[0];
    var last = samples[samples.length - 1];
    if (first && last && last.t - first.t >= 1000) {
      return ((last.fetched - first.fetched) * 1000) / (last.t - first.t);
    }
    // Just connected: fall back to the average since the job started.
    if (job.started_at) {
      var elapsed = (Date.now() - Date.parse(job.started_at)) / 1000;
      return elapsed > 1 ? fetched(job) / elapsed : null;
    }
    return null;
  }

  function renderRate() {
    var rate = currentRate();
    el.rate.textContent = rate === null ? "—" : rate.toFixed(rate < 10 ? 1 : 0) + " URLs/s";
    if (job.status === "running" && rate !== null && rate > 0) {
      el.eta.textContent = B.formatDuration((job.total - done(job)) / rate);
    } else if (job.status === "completed" || job.status === "cancelled" || job.status === "failed") {
      el.eta.textContent = "Done";
    } else {
      el.eta.textContent = "—";
    }
  }

  /* ---- Summary ---- */

  function summaryText() {
    var n = done(job);
    var text =
      B.formatNumber(n) + " of " + B.formatNumber(job.total) + " URLs done (" + B.percent(n, job.total) + "%)";
    if (B.isTerminal(job.status) || job.status === "cancelling") {
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
    B.setProgress(el.progress, n, job.total);
    el.status.className = "status status--" + job.status;
    el.status.textContent = B.statusLabel(job.status);
    el.done.textContent = B.formatNumber(n);
    el.succeeded.textContent = B.formatNumber(job.succeeded);
    el.failed.textContent = B.formatNumber(job.failed);
    el.cancelled.textContent = B.formatNumber(job.cancelled);
    el.total.textContent = B.formatNumber(job.total);
    B.setTime(el.started, job.started_at);
    B.setTime(el.finished, job.finished_at);
    el.error.textContent = job.error || "";
    el.error.hidden = !job.error;
    renderCancel();
    renderRate();
    el.summary.textContent = summaryText();
    if (previousStatus !== undefined) {
      announce(previousStatus !== job.status);
    }
  }

  function renderCancel() {
    var terminal = B.isTerminal(job.status);
    el.cancelButton.disabled = terminal || job.status === "cancelling" || cancelRequested;
    if (terminal) {
      el.cancelButton.textContent = "Cancel job";
    }
  }

  /* ---- Results ---- */

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
    tr.appendChild(cell(B.formatNumber(result.position + 1), "num"));
    tr.appendChild(cell(result.url, "results__url"));
    var outcome = document.createElement("td");
    var badge = document.createElement("span");
    badge.className = "outcome outcome--" + result.outcome;
    badge.textContent = result.outcome;
    outcome.appendChild(badge);
    tr.appendChild(outcome);
    tr.appendChild(cell(result.status_code, "num"));
    tr.appendChild(cell(result.bytes === null ? "" : B.formatNumber(result.bytes), "num"));
    tr.appendChild(cell(result.elapsed_ms === null ? "" : B.formatNumber(result.elapsed_ms), "num"));
    tr.appendChild(cell(result.error, "results__error"));
    return tr;
  }

  /* Only fetched URLs are listed: pending rows have not arrived yet, and
     cancelled ones (possibly thousands at once) are counted above instead. */
  function isShown(result) {
    return result.outcome === "succeeded" || result.outcome === "failed";
  }

  function timeValue(iso) {
    var t = iso ? Date.parse(iso) : NaN;
    return isNaN(t) ? 0 : t;
  }

  function newestFirst(a, b) {
    return b.fetchedAt - a.fetchedAt || b.position - a.position;
  }

  function addEntry(result) {
    var entry = { position: result.position, fetchedAt: timeValue(result.fetched_at), tr: buildResultRow(result) };
    entries.set(result.position, entry);
    return entry;
  }

  /* Drop the oldest rows beyond maxRows (they stay in `seen`, so they do not come back). */
  function trimResults() {
    var body = el.results;
    while (body.rows.length > maxRows) {
      var last = body.rows[body.rows.length - 1];
      entries.delete(parseInt(last.getAttribute("data-position"), 10));
      body.deleteRow(body.rows.length - 1);
    }
    el.resultsEmpty.hidden = body.rows.length > 0;
  }

  /*
   * A snapshot holds the newest final rows. A final row never changes, so the
   * rows already on the page stay valid: merge, re-sort newest first, keep
   * maxRows. (Replacing the table would shrink it to the snapshot's size.)
   */
  function mergeSnapshotResults(results) {
    var added = false;
    for (var i = 0; i < results.length; i++) {
      var result = results[i];
      if (seen.has(result.position)) {
        continue;
      }
      seen.add(result.position);
      if (isShown(result)) {
        addEntry(result);
        added = true;
      }
    }
    if (added) {
      var ordered = Array.from(entries.values()).sort(newestFirst);
      el.results.replaceChildren.apply(
        el.results,
        ordered.map(function (entry) {
          return entry.tr;
        })
      );
    }
    trimResults();
  }

  /* Progress rows are newer than everything shown; within a message they come oldest first, so prepending each leaves the newest on top. */
  function applyResults(results) {
    for (var i = 0; i < results.length; i++) {
      var result = results[i];
      if (seen.has(result.position)) {
        continue;
      }
      seen.add(result.position);
      if (isShown(result)) {
        el.results.insertBefore(addEntry(result).tr, el.results.firstChild);
      }
    }
    trimResults();
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
  }

  function onMessage(message) {
    if (message.type === "snapshot" && message.job) {
      mergeSnapshotResults(Array.isArray(message.results) ? message.results : []);
      updateJob(message.job);
      socket.healthy();
    } else if (message.type === "progress" && message.job) {
      applyResults(Array.isArray(message.results) ? message.results : []);
      updateJob(message.job);
    } else if (message.type === "error") {
      showActionMessage("The server reported an error: " + JSON.stringify(message.errors || message));
    }
  }

  /* ---- Cancel ---- */

  function showActionMessage(text) {
    el.actionMessage.textContent = text;
  }

  function csrfToken() {
    var input = el.cancelForm.querySelector("input[name=csrfmiddlewaretoken]");
    return input ? input.value : "";
  }

  /* POST to the API (works while the socket is reconnecting); if the request
     itself fails, fall back to asking over the socket. */
  function cancel(event) {
    event.preventDefault();
    if (el.cancelButton.disabled) {
      return;
    }
    cancelRequested = true;
    renderCancel();
    showActionMessage("Cancelling…");
    fetch(cancelUrl, {
      method: "POST",
      credentials: "same-origin",
      headers: { "X-CSRFToken": csrfToken(), Accept: "application/json" },
    })
      .then(function (response) {
        if (response.ok) {
          showActionMessage("Cancel requested.");
          return response.json().then(function (data) {
            // The socket may already have delivered a later state; never step back from a terminal one.
            if (data && data.id === job.id && data.status && !B.isTerminal(job.status)) {
              updateJob(data);
            }
          }, function () {});
        }
        cancelRequested = false;
        renderCancel();
        showActionMessage("Could not cancel (HTTP " + response.status + "). Reload the page and try again.");
        return undefined;
      })
      .catch(function () {
        if (socket.send({ type: "cancel" })) {
          showActionMessage("Cancel requested.");
        } else {
          cancelRequested = false;
          renderCancel();
          showActionMessage("Could not reach the server to cancel; try again in a moment.");
        }
      });
  }

  /* ---- Ticking: keep rate and ETA honest between messages (a stall shows as a falling rate). ---- */

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

  el.cancelForm.addEventListener("submit", cancel);
  B.localizeTimes(document);
  addSample();
  renderJob(undefined); // first render: nothing new to announce
  // Rows rendered by the server count as shown.
  Array.prototype.forEach.call(el.results.rows, function (tr) {
    var position = parseInt(tr.getAttribute("data-position"), 10);
    seen.add(position);
    entries.set(position, { position: position, fetchedAt: timeValue(tr.getAttribute("data-fetched-at")), tr: tr });
  });
  startTicking();
  socket.start();
})();
