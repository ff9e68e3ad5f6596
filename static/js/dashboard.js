/*
 * Dashboard: counts pasted URLs under the textarea, takes a dropped file, and keeps "Your jobs"
 * live over /ws/jobs/ ({"type": "jobs"} snapshot on connect, then one
 * {"type": "job"} per change).
 */
(function () {
  "use strict";

  var B = window.Batchfetch;

  function setupUrlCount() {
    var textarea = document.getElementById("id_urls");
    var output = document.getElementById("url-count");
    if (!textarea || !output) {
      return;
    }
    var pending = null;
    function update() {
      pending = null;
      var count = 0;
      var lines = textarea.value.split("\n");
      for (var i = 0; i < lines.length; i++) {
        if (lines[i].trim() !== "") {
          count += 1;
        }
      }
      output.textContent = count === 0 ? "" : B.formatNumber(count) + (count === 1 ? " line" : " lines");
    }
    // Counting 100k lines on every keystroke would lag; once per frame is plenty.
    textarea.addEventListener("input", function () {
      if (pending === null) {
        pending = window.requestAnimationFrame(update);
      }
    });
    update();
  }

  /* The file field is also a drop zone: a dropped file becomes the input's file, so the form posts it as usual. */
  function setupDropZone() {
    var zone = document.getElementById("drop-zone");
    var input = document.getElementById("id_file");
    var status = document.getElementById("drop-status");
    if (!zone || !input || !status) {
      return;
    }
    function describe() {
      var file = input.files && input.files[0];
      status.textContent = file
        ? file.name + " (" + B.formatNumber(Math.max(1, Math.round(file.size / 1024))) + " kB) will be uploaded."
        : "";
    }
    function hasFiles(event) {
      return event.dataTransfer && Array.prototype.indexOf.call(event.dataTransfer.types || [], "Files") !== -1;
    }
    zone.addEventListener("dragover", function (event) {
      if (hasFiles(event)) {
        event.preventDefault();
        event.dataTransfer.dropEffect = "copy";
        zone.classList.add("drop-zone--active");
      }
    });
    zone.addEventListener("dragleave", function () {
      zone.classList.remove("drop-zone--active");
    });
    zone.addEventListener("drop", function (event) {
      zone.classList.remove("drop-zone--active");
      if (!hasFiles(event)) {
        return;
      }
      event.preventDefault();
      var files = event.dataTransfer.files;
      if (files.length !== 1) {
        status.textContent = "Drop one .txt, .csv or .jsonl file.";
        return;
      }
      input.files = files;
      describe();
    });
    input.addEventListener("change", describe);
    describe();
  }

  function focusErrors() {
    var summary = document.getElementById("form-errors");
    if (summary) {
      summary.focus();
    }
  }

  function setupJobList() {
    var table = document.getElementById("jobs-table");
    var body = document.getElementById("jobs-body");
    var empty = document.getElementById("jobs-empty");
    var indicator = document.getElementById("connection");
    if (!table || !body) {
      return;
    }
    var jobUrlTemplate = table.getAttribute("data-job-url");
    var maxRows = parseInt(table.getAttribute("data-max-rows"), 10) || 50;
    var placeholder = "00000000-0000-0000-0000-000000000000";

    function cell(className) {
      var td = document.createElement("td");
      if (className) {
        td.className = className;
      }
      return td;
    }

    /* Same cells as templates/jobs/_job_row.html. */
    function buildRow(job) {
      var tr = document.createElement("tr");
      tr.setAttribute("data-job-id", job.id);
      tr.setAttribute("data-created-at", job.created_at || "");

      var name = cell("jobs__name");
      var link = document.createElement("a");
      link.href = jobUrlTemplate.replace(placeholder, job.id);
      link.textContent = job.name || job.id;
      name.appendChild(link);

      var status = cell();
      var badge = document.createElement("span");
      badge.className = "status status--" + job.status;
      badge.textContent = B.statusLabel(job.status);
      status.appendChild(badge);

      var progressCell = cell("jobs__progress");
      var progress = document.createElement("progress");
      progress.setAttribute("aria-label", "Progress of " + (job.name || job.id));
      var pct = B.setProgress(progress, job.done, job.total);
      var pctText = document.createElement("span");
      pctText.className = "num";
      pctText.textContent = pct + "%";
      progressCell.appendChild(progress);
      progressCell.appendChild(document.createTextNode(" "));
      progressCell.appendChild(pctText);

      var done = cell("num");
      done.textContent = B.formatNumber(job.done) + " / " + B.formatNumber(job.total);
      var succeeded = cell("num");
      succeeded.textContent = B.formatNumber(job.succeeded);
      var failed = cell("num");
      failed.textContent = B.formatNumber(job.failed);

      var created = cell();
      B.setTime(created, job.created_at);
      var started = cell();
      B.setTime(started, job.started_at);
      var finished = cell();
      B.setTime(finished, job.finished_at);

      [name, status, progressCell, done, succeeded, failed, created, started, finished].forEach(function (td) {
        tr.appendChild(td);
      });
      return tr;
    }

    function findRow(id) {
      var rows = body.rows;
      for (var i = 0; i < rows.length; i++) {
        if (rows[i].getAttribute("data-job-id") === id) {
          return rows[i];
        }
      }
      return null;
    }

    function trim() {
      while (body.rows.length > maxRows) {
        body.deleteRow(body.rows.length - 1);
      }
      if (empty) {
        empty.hidden = body.rows.length > 0;
      }
    }

    var shown = {}; // job id -> the last update applied, to drop late ones (B.isStale)

    function renderSnapshot(jobs) {
      shown = {};
      jobs.forEach(function (job) {
        shown[job.id] = job;
      });
      var rows = jobs.slice(0, maxRows).map(buildRow);
      body.replaceChildren.apply(body, rows);
      trim();
    }

    function createdAt(value) {
      var t = value ? Date.parse(value) : NaN;
      return isNaN(t) ? 0 : t;
    }

    /* Replace the row in place; a job not shown yet goes where its creation time puts it (newest first). */
    function upsert(job) {
      if (shown[job.id] && B.isStale(shown[job.id], job)) {
        return;
      }
      shown[job.id] = job;
      var row = buildRow(job);
      var existing = findRow(job.id);
      if (existing) {
        body.replaceChild(row, existing);
        return;
      }
      var created = createdAt(job.created_at);
      var rows = body.rows;
      for (var i = 0; i < rows.length; i++) {
        if (createdAt(rows[i].getAttribute("data-created-at")) < created) {
          body.insertBefore(row, rows[i]);
          trim();
          return;
        }
      }
      if (rows.length < maxRows) {
        body.appendChild(row); // older than every job shown, but there is room
      }
      trim();
    }

    var socket = new B.LiveSocket(table.getAttribute("data-ws-path"), {
      onMessage: function (message) {
        if (message.type === "jobs" && Array.isArray(message.jobs)) {
          renderSnapshot(message.jobs);
          socket.healthy();
        } else if ((message.type === "job" || message.type === "submitted") && message.job) {
          upsert(message.job);
          if (message.type === "job") {
            socket.healthy();
          }
        }
      },
      onState: function (state, info) {
        B.showConnection(indicator, state, info);
      },
    });
    socket.start();
  }

  B.localizeTimes(document);
  setupUrlCount();
  setupDropZone();
  setupJobList();
  focusErrors();
})();
