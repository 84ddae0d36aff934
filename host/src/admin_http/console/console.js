// Prism console: polls /api/overview and draws it. Rates and p99 come from the
// difference between two polls of the gateway's own counters.
"use strict";

const POLL_MS = 2000;
/// Live figures are over the polls of about the last 10 s: steadier than one interval.
const WINDOW_MS = 10000;
const CREDENTIAL = "prism-console-credential";
// Earlier polls within the window, oldest first:
// { at: the gateway's ms, traffic: { namespace: {requests, errors, timed, buckets} } }
let samples = [];

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function badge(text, className) {
  const span = document.createElement("span");
  span.className = "badge " + className;
  span.textContent = text;
  return span;
}

function fill(table, rows, columns, emptyText) {
  const body = document.querySelector(table + " tbody");
  body.replaceChildren();
  if (rows.length === 0) {
    const tr = document.createElement("tr");
    const td = cell(emptyText, "empty");
    td.colSpan = columns;
    tr.append(td);
    body.append(tr);
  }
  for (const row of rows) body.append(row);
}

function duration(seconds) {
  if (seconds === null) return "–";
  if (!isFinite(seconds)) return "> 10 s";
  if (seconds < 0.001) return (seconds * 1e6).toFixed(0) + " µs";
  if (seconds < 1) return (seconds * 1e3).toFixed(1) + " ms";
  return seconds.toFixed(2) + " s";
}

function age(seconds) {
  if (seconds < 60) return seconds + " s";
  if (seconds < 3600) return Math.floor(seconds / 60) + " min";
  return (seconds / 3600).toFixed(1) + " h";
}

// The 0.99 quantile of the calls between two cumulative histograms, interpolated
// within its bucket as Prometheus' histogram_quantile does.
function p99(before, now) {
  const total = now.timed - (before ? before.timed : 0);
  if (total <= 0) return null;
  const rank = 0.99 * total;
  let lower = 0;
  let below = 0;
  for (let i = 0; i < now.buckets.length; i++) {
    const [upper, cumulative] = now.buckets[i];
    const count = cumulative - (before && before.buckets[i] ? before.buckets[i][1] : 0);
    if (count >= rank) {
      const inBucket = count - below;
      return inBucket > 0 ? lower + (upper - lower) * ((rank - below) / inBucket) : upper;
    }
    lower = upper;
    below = count;
  }
  return Infinity;
}

function liveFigures(namespace, traffic, oldest, seconds) {
  const before = oldest && oldest.traffic[namespace];
  if (!oldest || seconds <= 0) return ["…", "…", "…"];
  const requests = traffic.requests - (before ? before.requests : 0);
  const errors = traffic.errors - (before ? before.errors : 0);
  const percent = requests > 0 ? " (" + ((100 * errors) / requests).toFixed(1) + "%)" : "";
  return [(requests / seconds).toFixed(1), (errors / seconds).toFixed(1) + percent, duration(p99(before, traffic))];
}

function drawNamespaces(overview, oldest, seconds) {
  const rows = overview.namespaces.map((namespace) => {
    const tr = document.createElement("tr");
    tr.dataset.namespace = namespace.name;
    const traffic = namespace.traffic;
    const [rate, errors, latency] = liveFigures(namespace.name, traffic, oldest, seconds);
    const slots = namespace.slots.map((slot) => slot.slot + " → " + slot.plugin).join(", ");
    const health = cell("");
    health.append(badge(namespace.health, namespace.health));
    if (namespace.health_message) {
      const message = document.createElement("div");
      message.className = "message";
      message.textContent = namespace.health_message;
      health.append(message);
    }
    const waiting = namespace.subscriptions.reduce((sum, s) => sum + s.waiting, 0);
    tr.append(
      cell(namespace.name, "mono"),
      cell(namespace.pattern),
      cell(slots),
      health,
      cell(rate, "num rate"),
      cell(errors, "num errors"),
      cell(latency, "num p99"),
      cell(String(namespace.in_flight), "num"),
      cell(String(namespace.open_streams), "num"),
      cell(String(namespace.subscription_count), "num subscriptions"),
      cell(String(waiting), "num outbox"),
    );
    return tr;
  });
  fill("#namespaces", rows, 11, "no namespaces");
}

function drawSubscriptions(overview) {
  const rows = [];
  for (const namespace of overview.namespaces) {
    for (const subscription of namespace.subscriptions) {
      const tr = document.createElement("tr");
      tr.append(
        cell(namespace.name, "mono"),
        cell(subscription.topic, "mono"),
        cell(subscription.durable_name || "–", "mono"),
        cell(age(subscription.open_s), "num"),
        cell(String(subscription.waiting), "num"),
        cell(String(subscription.dropped), "num"),
      );
      rows.push(tr);
    }
  }
  fill("#subscriptions", rows, 6, "no open subscriptions");
}

function drawPlugins(overview) {
  const rows = overview.plugins.map((plugin) => {
    const tr = document.createElement("tr");
    tr.dataset.plugin = plugin.name;
    const name = plugin.name === plugin.plugin_name ? plugin.name : plugin.name + " (" + plugin.plugin_name + ")";
    const sha = cell(plugin.sha256.slice(0, 12), "mono sha256");
    sha.title = plugin.sha256 + "\n" + plugin.path;
    const keys = cell("");
    if (plugin.config_keys.length > 0) {
      const details = document.createElement("details");
      const summary = document.createElement("summary");
      summary.textContent = plugin.config_keys.length + " keys";
      const list = document.createElement("ul");
      for (const key of plugin.config_keys) {
        const item = document.createElement("li");
        const head = document.createElement("code");
        head.textContent = key.name + ": " + key.type + (key.required ? " (required)" : key.default ? " = " + key.default : "");
        item.append(head, document.createTextNode(key.doc ? " — " + key.doc : ""));
        list.append(item);
      }
      details.append(summary, list);
      keys.append(details);
    } else {
      keys.textContent = "–";
    }
    tr.append(cell(name, "mono"), cell(plugin.version), cell(plugin.abi_version), sha, cell(plugin.interfaces.join(", "), "interfaces"), keys);
    return tr;
  });
  fill("#plugins", rows, 6, "no plugins");
}

function drawReloads(overview) {
  document.getElementById("reload-summary").textContent =
    overview.reloads_total + " reloads since start; " + (overview.watching ? "watching the config and plugin files" : "not watching files (reload with `prism reload`)");
  const rows = overview.reloads.map((reload) => {
    const tr = document.createElement("tr");
    const result = cell("");
    result.append(badge(reload.ok ? "applied" : "refused", reload.ok ? "ok" : "refused"));
    tr.append(cell(new Date(reload.at_unix_ms).toLocaleString()), cell(reload.trigger), result, cell(reload.message, "message"));
    return tr;
  });
  fill("#reloads", rows, 4, "no reloads yet");
}

function say(text, isError) {
  const state = document.getElementById("state");
  state.textContent = text;
  state.classList.toggle("error", Boolean(isError));
}

function askForCredential(reason) {
  const form = document.getElementById("credential");
  document.getElementById("credential-reason").textContent = reason;
  form.hidden = false;
}

async function poll() {
  const headers = {};
  const credential = sessionStorage.getItem(CREDENTIAL);
  if (credential) headers.authorization = "Bearer " + credential;
  let overview;
  try {
    const response = await fetch("/api/overview", { headers, cache: "no-store" });
    if (response.status === 401 || response.status === 403) {
      askForCredential((await response.text()).trim());
      say("needs a credential", true);
      return;
    }
    if (!response.ok) throw new Error(response.status + " " + (await response.text()).trim());
    overview = await response.json();
  } catch (error) {
    say("cannot reach the gateway: " + error.message, true);
    return;
  }
  document.getElementById("credential").hidden = true;
  const now = overview.at_unix_ms;
  samples = samples.filter((sample) => now - sample.at <= WINDOW_MS);
  const oldest = samples.length > 0 ? samples[0] : null;
  const seconds = oldest ? (now - oldest.at) / 1000 : 0;
  document.getElementById("gateway").textContent =
    "v" + overview.version + " · " + overview.config_path + " · " + overview.libraries_loaded + " libraries mapped";
  drawNamespaces(overview, oldest, seconds);
  drawSubscriptions(overview);
  drawPlugins(overview);
  drawReloads(overview);
  if (oldest) {
    document.body.dataset.live = "true";
    say("live · updated " + new Date(now).toLocaleTimeString());
  }
  const traffic = {};
  for (const namespace of overview.namespaces) traffic[namespace.name] = namespace.traffic;
  samples.push({ at: now, traffic });
}

document.getElementById("credential").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(CREDENTIAL, document.getElementById("credential-value").value.trim());
  samples = [];
  poll();
});

poll();
setInterval(poll, POLL_MS);
