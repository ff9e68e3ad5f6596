/*
 * The live page's result detail: click a row of the results table (or press Enter on it) and a
 * dialog shows that result in full, read from GET /api/jobs/<id>/results/<position>/ (the
 * #job-page element's data-detail-url, with 0 for the position): the request, final URL,
 * redirects, headers, timings, the short error and its attempt history, and the saved body's link.
 * Rows are rebuilt by job.js as the list scrolls, so clicks are caught on the table body.
 * Text is set with textContent only.
 */
(function () {
  "use strict";

  var root = document.getElementById("job-page");
  var dialog = document.getElementById("result-detail");
  var body = document.getElementById("results-body");
  if (!root || !dialog || !body) {
    return;
  }
  var template = root.getAttribute("data-detail-url"); // .../results/0/
  var content = document.getElementById("result-detail-content");
  var title = document.getElementById("result-detail-title");
  var B = window.Batchfetch;
  var current = null; // the position being shown (or loading)

  function detailUrl(position) {
    return template.replace(/\/results\/0\/$/, "/results/" + position + "/");
  }

  function text(value) {
    return value === null || value === undefined || value === "" ? "—" : String(value);
  }

  function section(heading, pairs) {
    var wrap = document.createElement("section");
    var h = document.createElement("h3");
    h.textContent = heading;
    wrap.appendChild(h);
    var dl = document.createElement("dl");
    dl.className = "detail-list";
    pairs.forEach(function (pair) {
      var dt = document.createElement("dt");
      dt.textContent = pair[0];
      var dd = document.createElement("dd");
      if (pair[1] instanceof Node) {
        dd.appendChild(pair[1]);
      } else {
        dd.textContent = text(pair[1]);
      }
      dl.appendChild(dt);
      dl.appendChild(dd);
    });
    wrap.appendChild(dl);
    return wrap;
  }

  // Request headers come as an object, response headers as [name, value] pairs (names may repeat).
  function headerPairs(headers) {
    var pairs = Array.isArray(headers)
      ? headers
      : Object.keys(headers || {}).map(function (key) {
          return [key, headers[key]];
        });
    return pairs.length ? pairs : [["Headers", "none"]];
  }

  function list(items) {
    var ul = document.createElement("ul");
    items.forEach(function (item) {
      var li = document.createElement("li");
      li.textContent = item;
      ul.appendChild(li);
    });
    return ul;
  }

  function render(data) {
    title.textContent = "Position " + data.position + ": " + data.outcome;
    var nodes = [
      section("Request", [
        ["Method", data.request.method],
        ["URL", data.request.url],
        ["Timeout", data.request.timeout + " s per attempt"],
        ["Retries", data.request.retries],
        ["Max redirects", data.request.max_redirects],
      ].concat(headerPairs(data.request.headers))),
      section("Response", [
        ["Final URL", data.final_url],
        ["Redirects", data.redirects],
        ["Status", data.status_code],
        ["Bytes", data.bytes === null ? null : B.formatNumber(data.bytes)],
        ["SHA-256", data.sha256],
      ].concat(headerPairs(data.response_headers))),
      section("Timings", [
        ["Elapsed", data.elapsed_ms === null ? null : B.formatNumber(data.elapsed_ms) + " ms"],
        ["Attempts", data.attempts],
        ["Fetched at", data.fetched_at ? B.formatDateTime(data.fetched_at) : null],
      ]),
    ];
    if (data.error) {
      nodes.push(
        section("Error", [
          ["Class", data.error_class],
          ["Message", data.error_summary],
          ["Earlier attempts", data.attempt_history.length ? list(data.attempt_history) : null],
          ["Full text", data.error],
        ])
      );
    }
    if (data.body_url) {
      var link = document.createElement("a");
      link.href = data.body_url;
      link.textContent = "Download the saved body";
      link.setAttribute("download", "");
      nodes.push(section("Body", [["Saved", link]]));
    }
    content.replaceChildren.apply(content, nodes);
  }

  function show(position) {
    current = position;
    title.textContent = "Position " + position;
    var loading = document.createElement("p");
    loading.className = "hint";
    loading.textContent = "Loading…";
    content.replaceChildren(loading);
    if (!dialog.open) {
      dialog.showModal();
    }
    fetch(detailUrl(position), { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        return response.ok ? response.json() : Promise.reject(new Error("HTTP " + response.status));
      })
      .then(function (data) {
        if (current === position) {
          render(data);
        }
      })
      .catch(function (error) {
        if (current === position) {
          loading.textContent = "Could not load this result (" + error.message + ").";
        }
      });
  }

  function rowOf(target) {
    var row = target.closest ? target.closest("tr[data-position]") : null;
    return row && body.contains(row) ? row : null;
  }

  body.addEventListener("click", function (event) {
    var row = rowOf(event.target);
    if (row && !event.target.closest("a")) {
      show(Number(row.getAttribute("data-position")));
    }
  });
  body.addEventListener("keydown", function (event) {
    var row = rowOf(event.target);
    if (row && (event.key === "Enter" || event.key === " ")) {
      event.preventDefault();
      show(Number(row.getAttribute("data-position")));
    }
  });
  document.getElementById("result-detail-close").addEventListener("click", function () {
    dialog.close();
  });
  dialog.addEventListener("close", function () {
    current = null;
  });
})();
