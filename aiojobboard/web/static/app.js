// The aiojobboard dashboard: plain JavaScript, no build step.
// All board data is put on the page as text (textContent), never as HTML.
// Every URL is relative, so that the page works under any mount path.
"use strict";

(function () {
  const PRIORITY = { VERY_HIGH: 2, HIGH: 1, NORMAL: 0, LOW: -1, VERY_LOW: -2 };
  const MAX_EVENTS = 200;
  const GONE = new Set(["CONSUMED", "TRASHED"]);
  const FREED = new Set(["ABANDONED", "EXPIRED"]);

  const jobs = new Map(); // uuid -> job record
  let selected = null; // uuid of the job whose details are shown
  let limit = 500;
  let loading = null; // the job list request in flight, if any
  let missed = null; // events that arrived while the list was loading
  let again = false; // the list was asked for again while it loaded
  let reloadTimer = null;
  let workersTimer = null;
  let cancelling = null; // the job the cancel dialog is about

  const $ = (id) => document.getElementById(id);

  // el("td", {class: "x", dataset: {uuid}}, "text", child) builds an element.
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined) continue;
      if (key === "dataset") Object.assign(node.dataset, value);
      else if (key === "class") node.className = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value);
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function showMessage(text) {
    const box = $("message");
    box.textContent = text;
    box.hidden = !text;
  }

  async function getJSON(url, options) {
    const response = await fetch(url, options);
    let body = null;
    try {
      body = await response.json();
    } catch (_) {
      body = null;
    }
    if (!response.ok) {
      const message = (body && body.error) || response.status + " " + response.statusText;
      const error = new Error(message);
      error.status = response.status;
      throw error;
    }
    return body;
  }

  function age(seconds) {
    seconds = Math.max(0, seconds);
    if (seconds >= 86400) return Math.floor(seconds / 86400) + "d";
    if (seconds >= 3600) return Math.floor(seconds / 3600) + "h";
    if (seconds >= 60) return Math.floor(seconds / 60) + "m";
    return Math.floor(seconds) + "s";
  }

  function ageOf(iso) {
    return age((Date.now() - Date.parse(iso)) / 1000);
  }

  function clock(iso) {
    const d = new Date(iso);
    return isNaN(d) ? String(iso) : d.toLocaleTimeString([], { hour12: false });
  }

  function short(value, width) {
    const text = typeof value === "string" ? value : JSON.stringify(value);
    return text.length <= width ? text : text.slice(0, width - 1) + "…";
  }

  // -- filters -----------------------------------------------------------------

  function filters() {
    return {
      state: $("filter-state").value,
      name: $("filter-name").value.trim().toLowerCase(),
      owner: $("filter-owner").value.trim().toLowerCase(),
    };
  }

  function matches(job) {
    const f = filters();
    if (f.state && job.state !== f.state) return false;
    if (f.name && !job.name.toLowerCase().includes(f.name)) return false;
    if (f.owner && !(job.owner || "").toLowerCase().includes(f.owner)) return false;
    return true;
  }

  function query() {
    const f = filters();
    const params = new URLSearchParams();
    if (f.state) params.set("state", f.state);
    if (f.name) params.set("name", f.name);
    if (f.owner) params.set("owner", f.owner);
    params.set("limit", String(limit));
    return "api/jobs?" + params.toString();
  }

  // -- the job list --------------------------------------------------------------

  // Load the list from the board; events that arrive meanwhile are applied
  // again over it, so that the list is never older than the event log.
  async function loadJobs() {
    if (loading) {
      again = true;
      return loading;
    }
    again = false;
    missed = [];
    loading = (async () => {
      try {
        const list = await getJSON(query());
        jobs.clear();
        for (const job of list) jobs.set(job.uuid, job);
        const replay = missed;
        missed = [];
        for (const event of replay) applyEvent(event, true);
        $("jobs-note").textContent =
          list.length >= limit ? "Showing the first " + limit + " jobs." : "";
        showMessage("");
      } catch (error) {
        showMessage("Could not load the jobs: " + error.message);
      } finally {
        loading = null;
        missed = null;
      }
      render();
      if (again) loadJobs();
    })();
    return loading;
  }

  // Reconcile with the board soon after changes, at most every 2 s.
  function scheduleReload() {
    if (reloadTimer) return;
    reloadTimer = setTimeout(() => {
      reloadTimer = null;
      loadJobs();
    }, 2000);
  }

  function sorted() {
    return [...jobs.values()].sort(
      (a, b) => PRIORITY[b.priority] - PRIORITY[a.priority] || a.sequence - b.sequence
    );
  }

  // Many events may arrive between two frames: draw the table once for them.
  let renderPending = false;
  function scheduleRender() {
    if (renderPending) return;
    renderPending = true;
    requestAnimationFrame(() => {
      renderPending = false;
      render();
    });
  }

  function render() {
    const rows = sorted().map(jobRow);
    $("job-rows").replaceChildren(...rows);
    if (!rows.length) {
      $("job-rows").append(
        el("tr", { class: "empty" }, el("td", { colspan: "8" }, "No jobs here."))
      );
    }
    $("job-count").textContent = jobs.size + (jobs.size === 1 ? " job" : " jobs");
  }

  function jobRow(job) {
    const cancel = el(
      "button",
      {
        type: "button",
        class: "cancel small",
        title: "Cancel this job",
        onclick: (event) => {
          event.stopPropagation();
          askCancel(job);
        },
      },
      "Cancel"
    );
    return el(
      "tr",
      {
        dataset: { uuid: job.uuid, state: job.state },
        class: job.uuid === selected ? "job selected" : "job",
        tabindex: "0",
        onclick: () => select(job.uuid),
        onkeydown: (event) => {
          if (event.key === "Enter") select(job.uuid);
        },
      },
      el("td", { class: "name" }, job.name),
      el("td", { class: "priority p-" + job.priority.toLowerCase() }, job.priority),
      el("td", { class: "state" }, el("span", { class: "badge " + job.state.toLowerCase() }, job.state)),
      el("td", { class: "owner" }, job.owner || "–"),
      el("td", { class: "attempt num" }, job.attempt === null || job.attempt === undefined ? "–" : job.attempt),
      el("td", { class: "age num", dataset: { created: job.created_on } }, ageOf(job.created_on)),
      el("td", { class: "uuid", title: job.uuid }, job.uuid.slice(0, 8)),
      el("td", { class: "actions" }, cancel)
    );
  }

  function refreshAges() {
    for (const cell of document.querySelectorAll("td.age[data-created]")) {
      cell.textContent = ageOf(cell.dataset.created);
    }
  }

  // -- events ----------------------------------------------------------------------

  function applyEvent(event, replaying) {
    const known = jobs.get(event.job_uuid);
    if (event.kind === "POSTED") {
      if (event.job && matches(event.job)) jobs.set(event.job_uuid, event.job);
      else if (!event.job) scheduleReload();
    } else if (GONE.has(event.kind)) {
      jobs.delete(event.job_uuid);
    } else if (event.kind === "CLAIMED") {
      if (known) {
        const again = replaying && known.state === "CLAIMED" && known.owner === event.owner;
        if (!again) {
          known.state = "CLAIMED";
          known.owner = event.owner;
          known.token = event.token;
          if (typeof known.attempt === "number") known.attempt += 1;
        }
        if (!matches(known)) jobs.delete(event.job_uuid);
      } else {
        scheduleReload();
      }
    } else if (FREED.has(event.kind)) {
      if (known) {
        known.state = "UNCLAIMED";
        known.owner = null;
        if (!matches(known)) jobs.delete(event.job_uuid);
      } else {
        scheduleReload();
      }
    }
  }

  function logEvent(event) {
    const list = $("events");
    const known = jobs.get(event.job_uuid) || (event.job ? event.job : null);
    const item = el(
      "li",
      { class: "event k-" + event.kind.toLowerCase(), dataset: { kind: event.kind, uuid: event.job_uuid } },
      el("time", { datetime: event.at }, clock(event.at)),
      " ",
      el("span", { class: "kind" }, event.kind),
      " ",
      el("span", { class: "what", title: event.job_uuid }, known ? known.name : event.job_uuid.slice(0, 8)),
      event.owner ? el("span", { class: "who" }, " by " + event.owner) : null,
      event.reason ? el("span", { class: "reason" }, " — " + event.reason) : null
    );
    list.prepend(item);
    while (list.children.length > MAX_EVENTS) list.lastElementChild.remove();
  }

  function onEvent(message) {
    let event;
    try {
      event = JSON.parse(message.data);
    } catch (_) {
      return;
    }
    logEvent(event);
    if (missed) missed.push(event);
    applyEvent(event, false);
    scheduleRender();
    if (event.kind !== "POSTED" || !event.job) scheduleReload();
    if (event.job_uuid === selected) {
      if (GONE.has(event.kind)) showGone(event);
      else loadDetail(selected);
    }
    if (event.kind !== "POSTED") scheduleWorkers();
  }

  function connect() {
    const source = new EventSource("api/events");
    const live = $("live");
    source.addEventListener("ready", () => {
      live.dataset.state = "live";
      live.textContent = "live";
      loadJobs();
      loadWorkers();
    });
    source.addEventListener("message", onEvent);
    source.addEventListener("error", () => {
      live.dataset.state = "down";
      live.textContent = "reconnecting…";
    });
  }

  // -- one job ----------------------------------------------------------------------

  function select(uuid) {
    selected = uuid;
    for (const row of document.querySelectorAll("tr.job")) {
      row.classList.toggle("selected", row.dataset.uuid === uuid);
    }
    $("detail").hidden = false;
    loadDetail(uuid);
  }

  async function loadDetail(uuid) {
    const body = $("detail-body");
    try {
      const job = await getJSON("api/jobs/" + encodeURIComponent(uuid));
      if (selected !== uuid) return;
      body.replaceChildren(...detailView(job));
    } catch (error) {
      if (selected !== uuid) return;
      const text = error.status === 404 ? "This job is no longer on the board." : error.message;
      body.replaceChildren(el("p", { class: "note gone" }, text));
    }
  }

  function showGone(event) {
    const how = event.kind === "CONSUMED" ? "consumed" : "trashed";
    const why = event.reason ? ": " + event.reason : "";
    $("detail-body").replaceChildren(
      el("p", { class: "note gone" }, "This job was " + how + why + ". It is no longer on the board.")
    );
  }

  function field(label, value) {
    return [el("dt", null, label), el("dd", null, value === null || value === undefined ? "–" : value)];
  }

  function detailView(job) {
    $("detail-title").textContent = job.name;
    const parts = [
      el(
        "dl",
        { class: "fields" },
        ...field("UUID", job.uuid),
        ...field("State", job.state),
        ...field("Owner", job.owner),
        ...field("Attempts", job.attempt),
        ...field("Priority", job.priority),
        ...field("Posted", new Date(job.created_on).toLocaleString() + " (" + ageOf(job.created_on) + " ago)"),
        ...field("Sequence", job.sequence),
        ...field("Logbook", job.book_name ? job.book_name + " (" + job.book_uuid + ")" : null)
      ),
      el("h3", null, "Details"),
      el("pre", { class: "json" }, JSON.stringify(job.details, null, 2)),
    ];
    if (job.book) parts.push(bookView(job.book));
    else if (job.book_error) parts.push(el("p", { class: "note" }, job.book_error));
    parts.push(
      el(
        "div",
        { class: "buttons" },
        el("button", { type: "button", class: "danger", id: "detail-cancel", onclick: () => askCancel(job) }, "Cancel job…")
      )
    );
    return parts;
  }

  function bookView(book) {
    const section = el("section", { class: "book" }, el("h3", null, "Logbook ", el("span", { class: "plain" }, book.name)));
    if (!book.flows.length) section.append(el("p", { class: "note" }, "No flows yet."));
    for (const flow of book.flows) {
      const rows = flow.atoms.map((atom) =>
        el(
          "tr",
          { class: "atom" },
          el("td", null, atom.name),
          el("td", null, el("span", { class: "badge atom-" + String(atom.state || "none").toLowerCase() }, atom.state || "–")),
          el("td", null, atom.intention),
          el("td", { class: "mono" }, atom.results === null ? "" : short(atom.results, 60)),
          el("td", { class: "mono failure" }, atom.failure === null ? "" : short(atom.failure, 60))
        )
      );
      section.append(
        el(
          "div",
          { class: "flow" },
          el("h4", null, "Flow " + flow.name + " ", el("span", { class: "badge" }, flow.state || "–")),
          rows.length
            ? el(
                "table",
                { class: "atoms" },
                el("thead", null, el("tr", null, el("th", null, "Atom"), el("th", null, "State"), el("th", null, "Intention"), el("th", null, "Results"), el("th", null, "Failure"))),
                el("tbody", null, ...rows)
              )
            : el("p", { class: "note" }, "No atoms.")
        )
      );
    }
    return section;
  }

  // -- cancelling -------------------------------------------------------------------

  function askCancel(job) {
    cancelling = job;
    $("cancel-name").textContent = job.name + " (" + job.uuid.slice(0, 8) + ")";
    $("cancel-dialog").showModal();
    $("cancel-reason").select();
  }

  async function confirmCancel(event) {
    event.preventDefault();
    const job = cancelling;
    const reason = $("cancel-reason").value.trim();
    if (!job || !reason) return;
    $("cancel-dialog").close();
    cancelling = null;
    try {
      await getJSON("api/jobs/" + encodeURIComponent(job.uuid) + "/cancel", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ reason: reason }),
      });
      jobs.delete(job.uuid);
      render();
      if (selected === job.uuid) showGone({ kind: "TRASHED", reason: reason });
      showMessage("");
    } catch (error) {
      showMessage("Could not cancel " + job.name + ": " + error.message);
      scheduleReload();
    }
  }

  // -- workers ------------------------------------------------------------------------

  function scheduleWorkers() {
    if (workersTimer) return;
    workersTimer = setTimeout(() => {
      workersTimer = null;
      loadWorkers();
    }, 1000);
  }

  async function loadWorkers() {
    try {
      const workers = await getJSON("api/workers");
      $("worker-rows").replaceChildren(
        ...workers.map((w) =>
          el(
            "tr",
            { dataset: { name: w.name } },
            el("td", null, w.name),
            el("td", null, w.host),
            el("td", { class: "num" }, w.pid),
            el("td", { class: "num" }, Array.isArray(w.holding) ? w.holding.length : w.holding),
            el("td", { class: "num", title: w.seen }, w.seen ? ageOf(w.seen) + " ago" : "–")
          )
        )
      );
      $("workers-note").textContent = workers.length ? "" : "No workers seen.";
    } catch (error) {
      $("worker-rows").replaceChildren();
      $("workers-note").textContent = error.message;
    }
  }

  // -- start --------------------------------------------------------------------------

  async function start() {
    try {
      const info = await getJSON("api/board");
      $("board-url").textContent = info.url;
      limit = info.limit;
    } catch (error) {
      showMessage("Could not reach the dashboard: " + error.message);
    }
    let typing = null;
    $("filters").addEventListener("input", () => {
      clearTimeout(typing);
      typing = setTimeout(loadJobs, 250);
    });
    $("filters").addEventListener("submit", (event) => event.preventDefault());
    $("detail-close").addEventListener("click", () => {
      selected = null;
      $("detail").hidden = true;
      render();
    });
    $("cancel-form").addEventListener("submit", confirmCancel);
    $("cancel-keep").addEventListener("click", () => {
      cancelling = null;
      $("cancel-dialog").close();
    });
    setInterval(refreshAges, 5000);
    setInterval(loadWorkers, 10000);
    connect();
  }

  start();
})();
