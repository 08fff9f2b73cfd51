// The p2twisted dashboard: the fleet grid, rolling updates and the audit
// timeline, kept live by the server's event stream (api/v1/events; see
// p2twisted/web/events.py).  Plain JavaScript, no build step, nothing from
// elsewhere.  The stream first sends a "reset" (every document), then a
// "change" per document that changed; a reconnecting page sends the last
// event id it saw and the server sends only what it missed.
"use strict";

(function () {
  const documents = {
    node: new Map(), rc: new Map(), daemon_set: new Map(), pod_cluster: new Map(),
    roll: new Map(), audit: new Map(),
  };

  // What a test (or a curious person, in the console) can look at.
  const dash = window.p2dash = {
    resets: 0, changes: 0, connections: 0, lastId: null, renders: 0,
    loadedAt: Date.now(), documents: documents,
  };

  function apply(doc) {
    const found = documents[doc.kind];
    if (!found) {
      return;
    }
    if (doc.value === null) {
      found.delete(doc.id);
    } else {
      found.set(doc.id, doc.value);
    }
  }

  // -- building the page ----------------------------------------------------

  function el(tag, attributes, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes || {})) {
      if (value !== null && value !== undefined) {
        node.setAttribute(name, String(value));
      }
    }
    for (const child of children) {
      if (child !== null && child !== undefined) {
        node.append(child instanceof Node ? child : document.createTextNode(String(child)));
      }
    }
    return node;
  }

  function short(sha) {
    return sha ? sha.slice(0, 7) : "";
  }

  function byName(a, b) {
    return a < b ? -1 : a > b ? 1 : 0;
  }

  // How a pod stands: converged (reality is intent) and healthy, or where
  // it is on the way.
  function phase(pod) {
    if (!pod.intent_sha) {
      return "removing";
    }
    if (pod.intent_sha === "invalid" || (pod.last_error && pod.intent_sha !== pod.reality_sha)) {
      return "failing";
    }
    if (pod.intent_sha !== pod.reality_sha) {
      return "converging";
    }
    if (pod.health === "critical") {
      return "unhealthy";
    }
    if (pod.health === "passing" && (!pod.health_sha || pod.health_sha === pod.reality_sha)) {
      return "healthy";
    }
    return "pending";
  }

  // A node is healthy when its agent is up and all of its pods are.
  function nodeHealth(node, phases) {
    if (node.agent !== "up") {
      return "down";
    }
    return phases.every((p) => p === "healthy") ? "healthy" : "degraded";
  }

  function podTitle(pod, state) {
    const lines = [
      pod.pod_id + " on " + pod.node + ": " + state,
      "intent  " + (pod.intent_sha || "none"),
      "reality " + (pod.reality_sha || "none"),
    ];
    if (pod.health) {
      lines.push("health " + pod.health + (pod.health_output ? ": " + pod.health_output : ""));
    }
    if (pod.state) {
      lines.push("agent " + pod.state + (pod.attempts ? " (" + pod.attempts + " failed attempts)" : ""));
    }
    if (pod.last_error) {
      lines.push("last error: " + pod.last_error);
    }
    return lines.join("\n");
  }

  function labelText(labels) {
    return Object.keys(labels || {}).sort(byName).map((k) => k + "=" + labels[k]).join(", ");
  }

  function renderGrid() {
    const nodes = Array.from(documents.node.values()).sort((a, b) => byName(a.node, b.node));
    const podIds = new Set();
    for (const node of nodes) {
      for (const pod of node.pods || []) {
        podIds.add(pod.pod_id);
      }
    }
    const columns = Array.from(podIds).sort(byName);
    const head = el("tr", {}, el("th", { class: "corner" }, "node \\ pod"),
      ...columns.map((id) => el("th", { class: "column", scope: "col" }, id)));
    const rows = nodes.map((node) => {
      const byId = new Map((node.pods || []).map((pod) => [pod.pod_id, pod]));
      const phases = [];
      const cells = columns.map((id) => {
        const pod = byId.get(id);
        if (!pod) {
          return el("td", { class: "pod none" });
        }
        const state = phase(pod);
        phases.push(state);
        const sha = state === "converging" && pod.reality_sha
          ? short(pod.reality_sha) + "\u2192" + short(pod.intent_sha)
          : short(pod.reality_sha || pod.intent_sha);
        return el("td", {
          class: "pod " + state, "data-node": node.node, "data-pod": id, "data-phase": state,
          "data-sha": pod.reality_sha || "", "data-error": pod.last_error || "",
          title: podTitle(pod, state),
        }, sha);
      });
      const health = nodeHealth(node, phases);
      const labels = labelText(node.labels);
      const header = el("th", {
        class: "node " + health, scope: "row", "data-node": node.node, "data-agent": node.agent,
        "data-health": health,
        title: node.node + ": agent " + node.agent + (labels ? "\nlabels: " + labels : "") +
          (node.error ? "\n" + node.error : ""),
      }, el("span", { class: "dot" }), node.node);
      return el("tr", {}, header, ...cells);
    });
    document.querySelector("#grid thead").replaceChildren(head);
    document.querySelector("#grid tbody").replaceChildren(...rows);
    document.getElementById("no-nodes").hidden = nodes.length > 0;
  }

  function count(side, name) {
    return side ? side[name] : 0;
  }

  function renderRoll(roll) {
    const oldRC = roll.old, newRC = roll.new;
    const old = count(oldRC, "current"), now = count(newRC, "current");
    const healthy = count(oldRC, "healthy") + count(newRC, "healthy");
    const target = roll.desired;
    const scale = Math.max(target, old + now, 1);
    const bar = el("div", { class: "bar", role: "img",
      "aria-label": now + " new of " + target + ", " + old + " old" });
    const parts = [
      ["new-healthy", count(newRC, "healthy")],
      ["new-unhealthy", Math.max(now - count(newRC, "healthy"), 0)],
      ["old", old],
    ];
    for (const [name, value] of parts) {
      const part = el("span", { class: name });
      part.style.width = (100 * value / scale) + "%";
      bar.append(part);
    }
    const target100 = el("span", { class: "target" });
    target100.style.left = (100 * target / scale) + "%";
    bar.append(target100);
    const farm = roll.farm || {};
    const side = (rc, id) => rc ? rc.current + "/" + rc.desired : id + " gone";
    return el("article", {
      class: "roll " + roll.state, "data-roll": roll.id, "data-old": old, "data-new": now,
      "data-healthy": healthy, "data-target": target, "data-state": roll.state,
    },
    el("h3", {}, roll.old_rc + " \u2192 " + roll.new_rc, " ",
      el("span", { class: "state" }, roll.state === "rolling_back" ? "rolling back" : "rolling")),
    bar,
    el("dl", {},
      el("dt", {}, "old"), el("dd", { class: "old" }, side(oldRC, roll.old_rc)),
      el("dt", {}, "new"), el("dd", { class: "new" }, side(newRC, roll.new_rc)),
      el("dt", {}, "healthy"), el("dd", { class: "healthy" }, healthy + " (min " + roll.min_healthy + ")"),
      el("dt", {}, "target"), el("dd", { class: "target" }, target)),
    farm.reason || farm.error ? el("p", { class: "reason" },
      (farm.reason || "") + (farm.error ? " error: " + farm.error : "")) : null,
    roll.reason ? el("p", { class: "reason" }, "rolling back because: " + roll.reason) : null);
  }

  function renderRolls() {
    const rolls = Array.from(documents.roll.values()).sort((a, b) => byName(a.id, b.id));
    document.getElementById("roll-list").replaceChildren(...rolls.map(renderRoll));
    document.getElementById("no-rolls").hidden = rolls.length > 0;
  }

  // What a controller's farm last said: its reason or error, or (a pod
  // cluster's) each syncer's.
  function farmText(kind, farm) {
    if (!farm) {
      return "";
    }
    if (kind === "pod_cluster") {
      return Object.keys(farm).sort(byName).map((name) => {
        const said = farm[name] || {};
        return name + ": " + (said.error ? "error: " + said.error : said.reason || "ok");
      }).join("; ");
    }
    return (farm.reason || "") + (farm.error ? " error: " + farm.error : "");
  }

  function controllerRow(kind, view) {
    let selector = view.selector, pods = "", state = view.disabled ? "disabled" : "enabled";
    if (kind === "rc") {
      pods = view.current + "/" + view.desired + " (" + view.healthy + " healthy)";
      state += view.roll ? ", in roll " + view.roll : "";
    } else if (kind === "daemon_set") {
      selector = view.node_selector;
    } else {
      selector = view.pod_selector;
      state = [view.availability_zone, view.cluster_name].filter((x) => x).join(" / ");
    }
    return el("tr", { "data-controller": kind + "/" + view.id, "data-pods": pods },
      el("td", { class: "kind" }, kind.replace("_", " ")), el("td", {}, view.id),
      el("td", {}, view.pod_id || ""), el("td", { class: "selector" }, selector || "(every node)"),
      el("td", {}, pods), el("td", {}, state), el("td", { class: "farm" }, farmText(kind, view.farm)));
  }

  function renderControllers() {
    const rows = [];
    for (const kind of ["rc", "daemon_set", "pod_cluster"]) {
      const views = Array.from(documents[kind].values()).sort((a, b) => byName(a.id, b.id));
      rows.push(...views.map((view) => controllerRow(kind, view)));
    }
    document.querySelector("#controller-list tbody").replaceChildren(...rows);
    document.getElementById("controller-list").hidden = rows.length === 0;
    document.getElementById("no-controllers").hidden = rows.length > 0;
  }

  function details(values) {
    return Object.keys(values || {}).sort(byName).map((k) => {
      const v = values[k];
      return k + "=" + (typeof v === "object" ? JSON.stringify(v) : v);
    }).join(" ");
  }

  function renderAudit() {
    const names = Array.from(documents.audit.keys()).sort(byName).reverse();
    const items = names.map((name) => {
      const event = documents.audit.get(name);
      const when = new Date(event.when * 1000);
      return el("li", { "data-audit": name, "data-kind": event.kind, "data-action": event.action },
        el("time", { datetime: when.toISOString(), title: when.toISOString() },
          when.toISOString().slice(11, 19)),
        el("span", { class: "headline" }, el("span", { class: "what" }, event.kind + " " + event.id),
          " ", el("span", { class: "action" }, event.action)),
        el("span", { class: "more" }, el("span", { class: "who" }, event.who || ""), " ",
          el("span", { class: "details" }, details(event.details))));
    });
    document.getElementById("timeline").replaceChildren(...items);
    document.getElementById("no-audit").hidden = items.length > 0;
  }

  function render() {
    renderGrid();
    renderControllers();
    renderRolls();
    renderAudit();
    dash.renders += 1;
  }

  let scheduled = false;
  function schedule() {
    if (!scheduled) {
      scheduled = true;
      setTimeout(() => { scheduled = false; render(); }, 0);
    }
  }

  // -- the event stream -----------------------------------------------------

  function setConnection(state, text) {
    const badge = document.getElementById("connection");
    badge.dataset.state = state;
    badge.textContent = text || state;
  }

  // After a failed or dropped stream the page waits longer each time
  // (1 s doubling to 30 s, each +-20% at random, so many pages open through
  // a long outage do not all come back at once); a live stream resets it.
  const RETRY_FIRST = 1000, RETRY_MAX = 30000, RETRY_JITTER = 0.2;
  dash.failures = 0;
  dash.delays = [];

  function retryDelay(failures) {
    const base = Math.min(RETRY_FIRST * Math.pow(2, failures), RETRY_MAX);
    return Math.round(base * (1 - RETRY_JITTER + 2 * RETRY_JITTER * Math.random()));
  }

  function connect(lastId) {
    // The page reconnects itself (not EventSource, whose retry is fixed),
    // saying where it was in the query.
    const url = "api/v1/events" + (lastId ? "?last=" + encodeURIComponent(lastId) : "");
    const source = new EventSource(url);
    source.addEventListener("open", () => {
      dash.connections += 1;
      dash.failures = 0;
      setConnection("live");
    });
    source.addEventListener("reset", (event) => {
      for (const found of Object.values(documents)) {
        found.clear();
      }
      JSON.parse(event.data).documents.forEach(apply);
      dash.resets += 1;
      dash.lastId = event.lastEventId;
      schedule();
    });
    source.addEventListener("change", (event) => {
      apply(JSON.parse(event.data));
      dash.changes += 1;
      dash.lastId = event.lastEventId;
      schedule();
    });
    source.addEventListener("error", () => {
      source.close();
      const delay = retryDelay(dash.failures);
      dash.failures += 1;
      dash.delays.push(delay);
      setConnection("reconnecting", "reconnecting\u2026");
      document.getElementById("connection").dataset.retryMs = String(delay);
      setTimeout(() => connect(dash.lastId), delay);
    });
    dash.source = source;
  }

  render();
  connect(null);
})();
