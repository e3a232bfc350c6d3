// Keeps a cluster page live: on every event of the cluster's stream (EventSource, the
// session cookie authenticates it), fetch the server-rendered part of the page again and
// swap it in. No framework, no build step; without this script the page is still whole.
(function () {
  "use strict";
  var live = document.getElementById("live");
  if (!live || !window.EventSource || !window.fetch) {
    return;
  }
  var status = document.getElementById("live-status");
  var TYPES = ["created", "started", "preempted", "requeued", "checkpointed", "completed",
    "failed", "cancelled"];
  var timer = null;
  var busy = false;
  var again = false;
  var fetchedAt = 0;

  function show(state, text) {
    if (status) {
      status.dataset.state = state;
      status.textContent = text;
    }
  }

  function refresh() {
    if (busy) {
      again = true;
      return;
    }
    busy = true;
    fetchedAt = Date.now();
    fetch(live.dataset.liveUrl, { credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        if (response.status === 401) {
          window.location.reload(); // the session ended: the page sends you to log in
          return null;
        }
        if (!response.ok) {
          throw new Error("HTTP " + response.status);
        }
        return response.text();
      })
      .then(function (html) {
        if (html !== null) {
          live.innerHTML = html;
          live.dataset.updates = String(Number(live.dataset.updates || 0) + 1);
        }
      })
      .catch(function () {
        show("reconnecting", "update failed; retrying");
      })
      .then(function () {
        busy = false;
        if (again) {
          again = false;
          soon();
        }
      });
  }

  // A burst of events (a pass that starts ten deployments) is one refetch, and a busy
  // cluster is refetched at most once a second (well within the rate limit).
  function soon() {
    if (timer === null) {
      var wait = Math.max(150, 1000 - (Date.now() - fetchedAt));
      timer = window.setTimeout(function () {
        timer = null;
        refresh();
      }, wait);
    }
  }

  var source = new EventSource(live.dataset.streamUrl);
  TYPES.forEach(function (type) {
    source.addEventListener(type, soon);
  });
  source.onopen = function () {
    show("live", "live");
  };
  source.onerror = function () {
    show("reconnecting", source.readyState === EventSource.CLOSED ? "not live" : "reconnecting");
  };
  // Estimates move with time as well as with events.
  window.setInterval(refresh, 30000);
})();
