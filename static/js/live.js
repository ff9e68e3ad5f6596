/*
 * Shared helpers for the live pages: a WebSocket that reconnects with
 * exponential backoff and jitter, a connection indicator, and formatters.
 * Exposed as window.Batchfetch; dashboard.js and job.js build on it.
 * Text is always set with textContent.
 */
(function (global) {
  "use strict";

  var BACKOFF_BASE_MS = 500;
  var BACKOFF_CAP_MS = 30000;

  /** Absolute ws:// or wss:// URL for a path on this host. */
  function wsUrl(path) {
    var scheme = global.location.protocol === "https:" ? "wss:" : "ws:";
    return scheme + "//" + global.location.host + path;
  }

  /**
   * Delay before reconnect attempt `attempt` (0-based): exponential, capped,
   * with "equal jitter" (half fixed, half random) so many tabs that lost the
   * server at once do not all come back in the same instant.
   */
  function backoffDelay(attempt) {
    var ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * Math.pow(2, attempt));
    return Math.round(ceiling / 2 + Math.random() * (ceiling / 2));
  }

  /**
   * A WebSocket that reopens itself after it closes.
   *
   * options.onMessage(data)      parsed JSON message
   * options.onState(state, info) "connecting" | "open" | "waiting" ({delay}) | "closed" | "refused" ({code})
   * options.shouldReconnect()    false once the page needs no more updates (e.g. the job finished)
   *
   * The backoff resets only when the page calls healthy() (after a snapshot):
   * a server that accepts and immediately closes must not cause a tight loop.
   */
  function LiveSocket(path, options) {
    this.url = wsUrl(path);
    this.options = options;
    this.attempt = 0;
    this.socket = null;
    this.timer = null;
    this.stopped = false;
    var self = this;
    global.addEventListener("online", function () {
      self.retryNow();
    });
  }

  LiveSocket.prototype.start = function () {
    this.stopped = false;
    this.open();
  };

  LiveSocket.prototype.open = function () {
    var self = this;
    this.timer = null;
    this.state("connecting");
    var socket;
    try {
      socket = new global.WebSocket(this.url);
    } catch (err) {
      this.schedule();
      return;
    }
    this.socket = socket;
    socket.addEventListener("open", function () {
      if (self.socket === socket) {
        self.state("open");
      }
    });
    socket.addEventListener("message", function (event) {
      if (self.socket !== socket) {
        return;
      }
      var data;
      try {
        data = JSON.parse(event.data);
      } catch (err) {
        return; // not ours; ignore rather than break the page
      }
      self.options.onMessage(data);
    });
    socket.addEventListener("close", function (event) {
      if (self.socket !== socket) {
        return;
      }
      self.socket = null;
      if (self.stopped) {
        return;
      }
      // 4400-4499: the server refused us on purpose (not found, forbidden); retrying will not help.
      if (event.code >= 4400 && event.code < 4500) {
        self.state("refused", { code: event.code });
        return;
      }
      if (self.options.shouldReconnect && !self.options.shouldReconnect()) {
        self.state("closed");
        return;
      }
      self.schedule();
    });
  };

  LiveSocket.prototype.schedule = function () {
    var delay = backoffDelay(this.attempt);
    this.attempt += 1;
    this.state("waiting", { delay: delay });
    this.timer = global.setTimeout(this.open.bind(this), delay);
  };

  /** Call once the server has sent a full snapshot: the connection works, reset the backoff. */
  LiveSocket.prototype.healthy = function () {
    this.attempt = 0;
  };

  /** Reconnect at once if a retry is pending (browser came back online, user asked). */
  LiveSocket.prototype.retryNow = function () {
    if (this.timer !== null && !this.stopped) {
      global.clearTimeout(this.timer);
      this.open();
    }
  };

  /** Send a JSON message; false when the socket is not open. */
  LiveSocket.prototype.send = function (data) {
    if (!this.socket || this.socket.readyState !== global.WebSocket.OPEN) {
      return false;
    }
    this.socket.send(JSON.stringify(data));
    return true;
  };

  /** Close for good (no reconnect). */
  LiveSocket.prototype.stop = function () {
    this.stopped = true;
    if (this.timer !== null) {
      global.clearTimeout(this.timer);
      this.timer = null;
    }
    if (this.socket) {
      var socket = this.socket;
      this.socket = null;
      socket.close(1000);
    }
    this.state("closed");
  };

  LiveSocket.prototype.state = function (name, info) {
    if (this.options.onState) {
      this.options.onState(name, info || {});
    }
  };

  /** Show a LiveSocket state in an indicator element (data-state drives the colour). */
  function showConnection(el, state, info, closedText) {
    if (!el) {
      return;
    }
    var text;
    if (state === "open") {
      text = "Live";
    } else if (state === "connecting") {
      text = "Connecting…";
    } else if (state === "waiting") {
      text = "Disconnected, retrying in " + Math.max(1, Math.round(info.delay / 1000)) + " s";
    } else if (state === "refused") {
      text = "Live updates refused; reload the page";
    } else {
      text = closedText || "Not live";
    }
    el.setAttribute("data-state", state);
    el.textContent = text;
  }

  var numberFormat = new Intl.NumberFormat();

  function formatNumber(value) {
    return value === null || value === undefined ? "" : numberFormat.format(value);
  }

  function formatDateTime(iso) {
    if (!iso) {
      return "";
    }
    var date = new Date(iso);
    return isNaN(date.getTime()) ? iso : date.toLocaleString();
  }

  /** "1h 02m", "3m 05s", "12s". */
  function formatDuration(seconds) {
    if (!isFinite(seconds) || seconds < 0) {
      return "—";
    }
    var s = Math.round(seconds);
    var h = Math.floor(s / 3600);
    var m = Math.floor((s % 3600) / 60);
    var rest = s % 60;
    var pad = function (n) {
      return n < 10 ? "0" + n : String(n);
    };
    if (h > 0) {
      return h + "h " + pad(m) + "m";
    }
    if (m > 0) {
      return m + "m " + pad(rest) + "s";
    }
    return rest + "s";
  }

  function percent(done, total) {
    if (!total) {
      return 0;
    }
    // Floor, so 100% means every URL is done.
    return Math.min(100, Math.floor((done * 100) / total));
  }

  function statusLabel(status) {
    return status ? status.charAt(0).toUpperCase() + status.slice(1) : "";
  }

  var TERMINAL = { completed: true, cancelled: true, failed: true };

  function isTerminal(status) {
    return TERMINAL[status] === true;
  }

  function doneOf(job) {
    return job.done !== undefined ? job.done : job.succeeded + job.failed + job.cancelled;
  }

  /* Several workers may share a job, each publishing its own updates, so one can arrive after a newer
     one. A job's counters only grow and a finished job stays finished: an update that would undo
     either is older than what is shown. */
  function isStale(shown, next) {
    return doneOf(next) < doneOf(shown) || (isTerminal(shown.status) && !isTerminal(next.status));
  }

  /** Put a <time> (or a dash) into `cell`, replacing what was there. */
  function setTime(cell, iso) {
    if (iso) {
      var time = document.createElement("time");
      time.setAttribute("datetime", iso);
      time.textContent = formatDateTime(iso);
      cell.replaceChildren(time);
    } else {
      var dash = document.createElement("span");
      dash.className = "muted";
      dash.textContent = "—";
      cell.replaceChildren(dash);
    }
  }

  /** Show server-rendered <time datetime> elements in the browser's locale and time zone. */
  function localizeTimes(root) {
    var times = (root || document).querySelectorAll("time[datetime]");
    for (var i = 0; i < times.length; i++) {
      times[i].textContent = formatDateTime(times[i].getAttribute("datetime"));
    }
  }

  /** Keep a progress element and its ARIA values in step. */
  function setProgress(progress, done, total) {
    var pct = percent(done, total);
    progress.max = total || 1;
    progress.value = total ? Math.min(done, total) : 0;
    progress.setAttribute("aria-valuemin", "0");
    progress.setAttribute("aria-valuemax", String(total));
    progress.setAttribute("aria-valuenow", String(done));
    progress.setAttribute(
      "aria-valuetext",
      formatNumber(done) + " of " + formatNumber(total) + " URLs done (" + pct + "%)"
    );
    return pct;
  }

  global.Batchfetch = Object.freeze({
    LiveSocket: LiveSocket,
    backoffDelay: backoffDelay,
    showConnection: showConnection,
    formatNumber: formatNumber,
    formatDateTime: formatDateTime,
    formatDuration: formatDuration,
    percent: percent,
    statusLabel: statusLabel,
    isTerminal: isTerminal,
    isStale: isStale,
    setTime: setTime,
    localizeTimes: localizeTimes,
    setProgress: setProgress,
  });
})(window);
