/*
 * Schedule page: keeps the run history and the failure sparkline current by reading
 * GET /api/schedules/<id>/runs/ every few seconds (slower while the tab is hidden).
 * The table rows mirror templates/jobs/schedule_detail.html; text is set with textContent only.
 */
(function () {
  "use strict";

  var POLL_MS = 2000;
  var HIDDEN_POLL_MS = 15000;

  var page = document.getElementById("schedule-page");
  if (!page) {
    return;
  }
  var runsUrl = page.getAttribute("data-runs-url");
  var jobUrl = page.getAttribute("data-job-url");
  var body = document.getElementById("runs-body");
  var empty = document.getElementById("runs-empty");
  var line = document.getElementById("sparkline-line");
  var max = document.getElementById("sparkline-max");
  var failures = 0;

  function cell(row, text, numeric) {
    var td = document.createElement("td");
    if (numeric) {
      td.className = "num";
    }
    td.textContent = text === null || text === undefined ? "" : String(text);
    row.appendChild(td);
    return td;
  }

  function buildRow(run) {
    var row = document.createElement("tr");
    row.setAttribute("data-run", String(run.id));
    var due = cell(row, "");
    var time = document.createElement("time");
    time.setAttribute("datetime", run.due_at);
    time.textContent = run.due_at.slice(0, 19);
    due.appendChild(time);
    if (run.manual) {
      due.appendChild(document.createTextNode(" (run now)"));
    }
    var link = cell(row, run.job ? "" : run.reason);
    if (run.job) {
      var a = document.createElement("a");
      a.href = jobUrl.replace("00000000-0000-0000-0000-000000000000", run.job);
      a.textContent = "job";
      link.appendChild(a);
    }
    var status = run.job_status || run.status;
    var badge = document.createElement("span");
    badge.className = "status status--" + status;
    badge.textContent = status;
    cell(row, "").appendChild(badge);
    cell(row, run.total, true);
    cell(row, run.succeeded, true);
    cell(row, run.failed, true);
    cell(row, run.duration, true);
    return row;
  }

  function render(data) {
    var rows = document.createDocumentFragment();
    for (var i = 0; i < data.runs.length; i++) {
      rows.appendChild(buildRow(data.runs[i]));
    }
    body.replaceChildren(rows);
    empty.hidden = data.runs.length > 0;
    if (line && data.sparkline) {
      line.setAttribute("points", data.sparkline.points);
      max.textContent = String(data.sparkline.max);
    }
  }

  function poll() {
    fetch(runsUrl, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) {
          throw new Error("HTTP " + response.status);
        }
        return response.json();
      })
      .then(function (data) {
        failures = 0;
        render(data);
      })
      .catch(function () {
        failures = Math.min(failures + 1, 5);
      })
      .then(function () {
        var delay = document.hidden ? HIDDEN_POLL_MS : POLL_MS * Math.pow(2, failures);
        window.setTimeout(poll, delay);
      });
  }

  if (body) {
    window.setTimeout(poll, POLL_MS);
  }
})();
