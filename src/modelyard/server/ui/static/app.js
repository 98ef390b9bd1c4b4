// modelyard dashboard: one script, no dependencies, no build step.
// It reads the JSON the gateway already serves (/v1/status, /v1/stats, /admin/...) and writes the
// page with DOM calls and textContent only, so nothing from the server is ever parsed as HTML.
// Changes go through the admin API with the session cookie and the page's CSRF token.
"use strict";
(() => {
  const app = document.getElementById("app");
  const PAGE = app.dataset.page;
  const MODE = app.dataset.mode; // admin | org_admin | readonly
  const ADMIN = MODE === "admin";
  const CSRF = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";

  // -- DOM ---------------------------------------------------------------------------------------

  function h(tag, attrs, ...kids) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") el.className = v;
      else if (k === "text") el.textContent = v;
      else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? "" : String(v));
    }
    for (const kid of kids.flat(Infinity)) {
      if (kid === null || kid === undefined || kid === false) continue;
      el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
    }
    return el;
  }
  const svgNS = "http://www.w3.org/2000/svg";
  function s(tag, attrs, ...kids) {
    const el = document.createElementNS(svgNS, tag);
    for (const [k, v] of Object.entries(attrs || {})) if (v !== null && v !== undefined) el.setAttribute(k, String(v));
    for (const kid of kids.flat()) if (kid) el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
    return el;
  }
  let uid = 0;
  const id = (p) => `${p}-${++uid}`;
  function field(label, input) {
    input.id = input.id || id("f");
    return h("div", { class: "field" }, h("label", { for: input.id }, label), input);
  }
  function button(label, onclick, attrs = {}) {
    return h("button", { type: "button", ...attrs, onclick }, label);
  }
  function badge(state) {
    return h("span", { class: `badge ${state}` }, state || "unknown");
  }
  function table(head, rows, caption) {
    return h(
      "div",
      { class: "scroll", tabindex: 0, role: "region", "aria-label": caption || head.filter(Boolean).slice(0, 3).join(", ") },
      h(
        "table",
        {},
        caption ? h("caption", {}, caption) : null,
        h("thead", {}, h("tr", {}, head.map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", {}, rows.map((r) => h("tr", {}, r.map((c) => h("td", {}, c))))),
      ),
    );
  }
  function section(title, ...kids) {
    const hid = id("h");
    return h("section", { "aria-labelledby": hid }, h("h2", { id: hid }, title), kids);
  }
  function toast(text, kind = "ok") {
    const t = document.getElementById("toast");
    t.className = kind;
    t.textContent = text;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => (t.textContent = ""), 8000);
  }

  // -- numbers -----------------------------------------------------------------------------------

  const usd = (v) => (v === null || v === undefined ? "—" : `$${Number(v).toFixed(v !== 0 && Math.abs(v) < 0.01 ? 6 : 2)}`);
  const ms = (v) => (v === null || v === undefined ? "—" : `${Math.round(v)} ms`);
  const pct = (v) => (v === null || v === undefined ? "—" : `${(v * 100).toFixed(1)} %`);
  const num = (v) => (v === null || v === undefined ? "—" : Number(v).toLocaleString("en"));
  const perM = (v) => (v === null || v === undefined ? "—" : `$${Number(v).toFixed(2)}`);
  function today() {
    const d = new Date();
    d.setHours(0, 0, 0, 0);
    return d.toISOString();
  }
  function ago(hours) {
    return new Date(Date.now() - hours * 3600e3).toISOString();
  }

  // -- the API -----------------------------------------------------------------------------------

  async function call(path, { method = "GET", body, revision } = {}) {
    const headers = { Accept: "application/json" };
    const init = { method, headers, credentials: "same-origin" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    if (method !== "GET") headers["X-CSRF-Token"] = CSRF;
    if (revision) headers["If-Match"] = `"${revision}"`;
    const r = await fetch(path, init);
    const text = await r.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = { raw: text };
    }
    if (r.status === 401 && MODE !== "readonly") location.assign("/ui/login");
    if (!r.ok) {
      const err = (data && (data.error || data)) || {};
      const e = new Error(err.message || `${r.status} ${r.statusText}`);
      e.status = r.status;
      throw e;
    }
    return { data, etag: r.headers.get("ETag") };
  }
  const get = async (path) => (await call(path)).data;
  async function activeRevision() {
    const r = await call("/admin/config");
    return parseInt(String(r.etag || "").replace(/\D/g, ""), 10) || undefined;
  }
  // a config change: based on the active revision; says which revision it made
  async function change(path, body = {}, method = "POST") {
    const revision = await activeRevision();
    const out = (await call(path, { method, body, revision })).data;
    if (out && out.revision) toast(`Deployed revision ${out.revision.id}${out.changed ? "" : " (no change)"}`);
    return out;
  }
  async function guarded(work) {
    try {
      await work();
    } catch (e) {
      toast(e.message, "error");
    }
    refresh();
  }
  async function optional(path) {
    try {
      return await get(path);
    } catch (e) {
      return null;
    }
  }

  // -- pages -------------------------------------------------------------------------------------

  function providerStates(status) {
    const byProvider = {};
    for (const [name, m] of Object.entries(status.models || {})) (byProvider[m.provider] ||= []).push([name, m]);
    return byProvider;
  }

  // one budget's use in its period (a row of /admin/budgets)
  function gauge(b) {
    const share = b.fraction || 0;
    const label = `${b.budget} (${b.scope}, ${b.period})`;
    const limit = b.limit_usd !== null && b.limit_usd !== undefined ? `${usd(b.used_usd)} of ${usd(b.limit_usd)}` : `${num(b.used_tokens)} of ${num(b.limit_tokens)} tokens`;
    return h(
      "div",
      { class: "gauge" },
      h("div", { class: "gauge-label" }, label, " ", badge(b.state)),
      h("progress", { max: 100, value: Math.round(Math.min(share, 1) * 100), "aria-label": `${label}: ${pct(share)} used` }),
      h("div", { class: "muted" }, `${limit} (${pct(share)})`),
    );
  }

  // -- the Compare page's parts ------------------------------------------------------------------

  const SOURCES = ["production", "canary", "shadow"];
  const compareDraft = { prompts: '{"id": "q1", "prompt": "What is 2 + 2? Answer with a number.", "expected": "4"}\n{"id": "q2", "prompt": "What is the capital of France?", "expected": "Paris"}' };
  let selectedRun = new URLSearchParams(location.search).get("run");
  let following = null;

  function follow(runId, total) {
    following = { id: runId, done: 0, total, spent: 0 };
    selectedRun = runId;
    refresh();
    const events = new EventSource(`/admin/comparisons/${encodeURIComponent(runId)}/events`);
    const update = (e) => {
      const ev = JSON.parse(e.data);
      if (ev.total) following.total = ev.total;
      if (ev.done !== undefined) following.done = ev.done;
      if (ev.spent_usd !== undefined) following.spent = ev.spent_usd;
      const bar = document.getElementById("cmp-progress");
      const text = document.getElementById("cmp-progress-text");
      if (bar) { bar.max = following.total || 1; bar.value = following.done; }
      if (text) text.textContent = ` ${following.done} of ${following.total} calls, ${usd(following.spent)}`;
    };
    events.addEventListener("started", update);
    events.addEventListener("progress", update);
    events.addEventListener("finished", (e) => {
      update(e);
      events.close();
      const ev = JSON.parse(e.data);
      toast(`Comparison ${ev.status}${ev.stop_reason ? `: ${ev.stop_reason}` : ""}`);
      following = null;
      refresh();
    });
    events.onerror = () => events.close();
  }

  function runResult(r) {
    const s = r.summary || {};
    const recRows = (r.recommendations || []).map((rec) => [
      rec.model, rec.summary, rec.confidence, (rec.trade_offs || []).join("; ") || "—",
      r.route && rec.model !== rec.instead_of && ADMIN
        ? button(`Apply`, () => guarded(() => change(`/admin/routes/${encodeURIComponent(r.route)}/switch`, { model: rec.model })), { "aria-label": `Switch ${r.route} to ${rec.model}` })
        : "—",
    ]);
    return section(`Result: ${r.name || r.id}`,
      h("p", { class: "muted" }, `${r.status}${r.stop_reason ? ` (${r.stop_reason})` : ""}: ${r.calls.done} of ${r.calls.planned} calls in ${Number(r.duration_s).toFixed(1)} s, spent ${usd(r.spent_usd)}`),
      h("div", { class: "cards" },
        [["Winner", s.winner], ["Best for accuracy", s.best_for_accuracy], ["Best for cost", s.best_for_cost], ["Best for speed", s.best_for_speed]].map(([label, v]) =>
          h("div", { class: "card stat", "data-testid": label.toLowerCase().replaceAll(" ", "-") }, h("div", { class: "label" }, label), h("div", { class: "big" }, v || "—")))),
      table(["Model", "Success", "Accuracy", "Consistency", "Accurate / partial / failed", "p50", "p95", "TTFT p50", "Cost / request", "Cost / accurate"],
        Object.entries(r.figures || {}).map(([m, f]) => [m, pct(f.success_rate), pct(f.accuracy), pct(f.consistency), `${f.accurate} / ${f.partial} / ${f.failed}`, ms(f.latency_p50_ms), ms(f.latency_p95_ms), ms(f.ttft_p50_ms), usd(f.cost_per_request_usd), usd(f.cost_per_accurate_usd)]),
        "Figures per model"),
      table(["Model", `Expected change vs ${r.current}`, "Confidence", "Trade-offs", ""], recRows, "Recommendations"),
    );
  }

  function productionRecs(data) {
    if (!data.length) return h("p", { class: "muted" }, "No route.");
    return table(["Route", "Current", "Status", "Recommendation", "Confidence", "Why", ""], data.map((r) => {
      const rec = r.recommendation;
      return [r.route, r.current, badge(r.status), rec ? `${rec.model}: ${rec.summary}` : "—", rec ? rec.confidence : "—", r.reason || "",
        rec && ADMIN ? button("Apply", () => guarded(() => change(rec.apply.path, rec.apply.body)), { "aria-label": `Apply ${rec.model} to ${r.route}` }) : "—"];
    }), "Recommendations from production");
  }

  function sideBySide(bySource) {
    const rows = [];
    SOURCES.forEach((src, i) => {
      for (const g of ((bySource[i] && bySource[i].data) || [])) rows.push([src, g.key, num(g.requests), pct(g.success_rate), ms(g.latency_p50_ms), usd(g.requests ? g.cost_usd / g.requests : null), g.judge_score_avg === null || g.judge_score_avg === undefined ? "—" : Number(g.judge_score_avg).toFixed(2)]);
    });
    if (!rows.length) return h("p", { class: "muted" }, "No production, canary or shadow traffic in the last 7 days.");
    return table(["Source", "Model", "Requests", "Success", "p50", "Cost / request", "Judge score"], rows, "Traffic by source");
  }

  const pages = {
    async overview() {
      const [status, stats, budgets, alerts] = await Promise.all([
        get("/v1/status"),
        optional(`/v1/stats?since=${encodeURIComponent(today())}`),
        MODE === "readonly" ? null : optional("/admin/budgets"),
        ADMIN ? optional("/admin/alerts") : null,
      ]);
      const providers = Object.entries(status.providers || {});
      const healthy = providers.filter(([, p]) => p.state === "healthy").length;
      const unhealthy = providers.filter(([, p]) => p.state === "unhealthy").length;
      const overall = unhealthy === providers.length && providers.length ? "critical" : healthy === providers.length ? "healthy" : "degraded";
      const t = (stats && stats.total) || {};
      return [
        h(
          "div",
          { class: "cards" },
          h("div", { class: `card stat ${overall}` }, h("div", { class: "label" }, "Overall"), h("div", { class: "big", "data-testid": "overall" }, overall)),
          h("div", { class: "card stat" }, h("div", { class: "label" }, "Providers healthy"), h("div", { class: "big", "data-testid": "healthbar" }, `${healthy}/${providers.length} healthy`)),
          h("div", { class: "card stat" }, h("div", { class: "label" }, "Requests today"), h("div", { class: "big" }, num(t.requests || 0))),
          h("div", { class: "card stat" }, h("div", { class: "label" }, "Cost today"), h("div", { class: "big" }, usd(t.cost_usd || 0))),
          h("div", { class: "card stat" }, h("div", { class: "label" }, "Fallbacks today"), h("div", { class: "big" }, num(t.fallbacks || 0))),
          h("div", { class: "card stat" }, h("div", { class: "label" }, "Savings today"), h("div", { class: "big" }, usd(t.savings_usd))),
        ),
        h("div", { class: "bar", role: "img", "aria-label": `${healthy} of ${providers.length} providers healthy` }, providers.map(([name, p]) => h("span", { class: `seg ${p.state}`, title: `${name}: ${p.state}` }))),
        budgets
          ? section("Budgets", (budgets.data || []).length ? budgets.data.map(gauge) : h("p", { class: "muted" }, "No budgets configured."))
          : null,
        alerts
          ? section("Recent alerts", (alerts.recent || []).length ? h("ul", {}, alerts.recent.slice(-10).reverse().map((a) => h("li", {}, `${a.name || a.kind || ""} ${a.target || ""}: ${a.message || (a.firing ? "firing" : "resolved")}`))) : h("p", { class: "muted" }, "No recent alerts."))
          : null,
      ];
    },

    async providers() {
      const [status, list, stats, modelList] = await Promise.all([
        get("/v1/status"),
        ADMIN ? optional("/admin/providers") : null,
        optional(`/v1/stats?group_by=provider&since=${encodeURIComponent(today())}`),
        ADMIN ? optional("/admin/models") : null,
      ]);
      const modelViews = Object.fromEntries(((modelList && modelList.data) || []).map((v) => [v.name, v]));
      const byProvider = providerStates(status);
      const views = Object.fromEntries(((list && list.data) || []).map((v) => [v.name, v]));
      const today_ = Object.fromEntries(((stats && stats.data) || []).map((r) => [r.key, r]));
      const cards = Object.entries(status.providers || {}).map(([name, p]) => {
        const models = byProvider[name] || [];
        const view = views[name] || {};
        const disabled = models.length > 0 && models.every(([n]) => (modelViews[n] || {}).enabled === false);
        const state = disabled ? "disabled" : p.state;
        const lat = models.map(([, m]) => m.latency_ms).filter((v) => v !== null && v !== undefined);
        const ok = models.map(([, m]) => m.success_rate).filter((v) => v !== null && v !== undefined);
        const lastError = models.map(([, m]) => m.last_error).find(Boolean) || (p.state !== "healthy" && p.last_check) || "";
        const row = today_[name] || {};
        const last = tested[name];
        const result = h("p", { class: `result ${last ? last.state : ""}`, "aria-live": "polite" }, last ? last.text : "");
        return h(
          "article",
          { class: `card provider ${state}`, "data-provider": name, "aria-label": `provider ${name}` },
          h("h2", {}, name, " ", badge(state)),
          h("dl", {},
            h("dt", {}, "Kind"), h("dd", {}, p.kind),
            h("dt", {}, "Latency"), h("dd", {}, lat.length ? ms(lat.reduce((a, b) => a + b) / lat.length) : "—"),
            h("dt", {}, "Success"), h("dd", {}, ok.length ? pct(ok.reduce((a, b) => a + b) / ok.length) : "—"),
            h("dt", {}, "Today"), h("dd", {}, `${num(row.requests || 0)} requests, ${usd(row.cost_usd || 0)}`),
            h("dt", {}, "Models"), h("dd", {}, String((view.models || models).length)),
            h("dt", {}, "Last error"), h("dd", { class: "err" }, lastError || "—"),
          ),
          ADMIN
            ? h("div", { class: "actions" },
                button("Test", () => guarded(() => testProvider(name)), { "aria-label": `Test ${name}` }),
                button("Edit", () => editProvider(name, views[name]), { "aria-label": `Edit ${name}` }))
            : null,
          result,
        );
      });
      return [
        ADMIN ? h("div", { class: "actions" }, button("Add provider", () => editProvider(null, null)), button("Test all", () => guarded(async () => {
          const names = Object.keys(status.providers || {});
          const results = await Promise.all(names.map((n) => testProvider(n).then(() => [n, tested[n].state === "healthy"])));
          toast(results.map(([n, ok]) => `${n}: ${ok ? "ok" : "failed"}`).join(", "), results.every(([, ok]) => ok) ? "ok" : "error");
        }))) : null,
        h("div", { id: "editor" }),
        h("div", { class: "cards" }, cards),
      ];
    },

    async models() {
      const [status, list, stats, discovery] = await Promise.all([
        get("/v1/status"),
        ADMIN ? optional("/admin/models") : null,
        optional(`/v1/stats?group_by=model&since=${encodeURIComponent(today())}`),
        ADMIN ? optional("/admin/discovery") : null,
      ]);
      const views = Object.fromEntries(((list && list.data) || []).map((v) => [v.name, v]));
      const today_ = Object.fromEntries(((stats && stats.data) || []).map((r) => [r.key, r]));
      const models = Object.entries(status.models || {}).map(([name, m]) => ({ name, m, v: views[name] || {}, t: today_[name] || {} }));
      const providers = [...new Set(models.map((x) => x.m.provider))].sort();
      const q = h("input", { type: "search", placeholder: "name or upstream" });
      const prov = h("select", {}, h("option", { value: "" }, "any"), providers.map((p) => h("option", { value: p }, p)));
      const caps = h("select", {}, ["", "vision", "tools", "json_schema", "embeddings", "reasoning", "local"].map((c) => h("option", { value: c }, c || "any")));
      const maxPrice = h("input", { type: "number", min: 0, step: "0.01", placeholder: "$ per 1M output" });
      const sort = h("select", {}, ["name", "provider", "cost", "latency", "popularity"].map((c) => h("option", { value: c }, c)));
      // latency classes by p50 (unmeasured models are in every class)
      const speed = h("select", {}, [["", "any"], ["fast", "fast (< 1 s)"], ["medium", "medium (1-5 s)"], ["slow", "slow (> 5 s)"]].map(([v, l]) => h("option", { value: v }, l)));
      const speedOf = (ms_) => (ms_ === null || ms_ === undefined ? "" : ms_ < 1000 ? "fast" : ms_ <= 5000 ? "medium" : "slow");
      const body = h("div");
      function draw() {
        const text = q.value.toLowerCase();
        let rows = models.filter(({ name, m, v }) => {
          if (text && !name.toLowerCase().includes(text) && !String(m.upstream).toLowerCase().includes(text)) return false;
          if (prov.value && m.provider !== prov.value) return false;
          if (caps.value === "local") return (status.providers[m.provider] || {}).local;
          if (caps.value && !(v.capabilities || {})[caps.value]) return false;
          const out = v.price && v.price.output_per_mtok;
          if (maxPrice.value && out !== null && out !== undefined && out > Number(maxPrice.value)) return false;
          const cls = speedOf(m.latency_ms);
          if (speed.value && cls && cls !== speed.value) return false;
          return true;
        });
        const key = { name: (x) => x.name, provider: (x) => x.m.provider, cost: (x) => (x.v.price && x.v.price.output_per_mtok) ?? Infinity, latency: (x) => x.m.latency_ms ?? Infinity, popularity: (x) => -(x.t.requests || 0) }[sort.value];
        rows = rows.sort((a, b) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0));
        body.replaceChildren(
          table(
            ["Model", "Provider", "State", "Capabilities", "In / out per 1M", "p50 latency", "Success", "Today", ADMIN ? "Actions" : ""],
            rows.map(({ name, m, v, t }) => [
              h("span", { "data-model": name }, name, h("div", { class: "muted" }, m.upstream)),
              m.provider,
              badge(v.enabled === false ? "disabled" : m.state),
              Object.entries(v.capabilities || {}).filter(([, on]) => on).map(([c]) => c).join(", ") || "—",
              v.price ? `${perM(v.price.input_per_mtok)} / ${perM(v.price.output_per_mtok)}` : "—",
              ms(t.latency_p50_ms ?? m.latency_ms),
              pct(m.success_rate),
              `${num(t.requests || 0)} · ${usd(t.cost_usd || 0)}`,
              ADMIN
                ? h("div", { class: "actions" },
                    useIn(name, Object.keys(status.routes || {})),
                    button(v.enabled === false ? "Enable" : "Disable", () => guarded(() => change(`/admin/models/${encodeURIComponent(name)}/${v.enabled === false ? "enable" : "disable"}`)), { "aria-label": `${v.enabled === false ? "Enable" : "Disable"} ${name}` }),
                    button("Test", () => guarded(async () => {
                      await testProvider(m.provider);
                      toast(`${name} via ${m.provider}: ${tested[m.provider].text}`, tested[m.provider].state === "healthy" ? "ok" : "error");
                    }), { "aria-label": `Test ${name}` }))
                : "",
            ]),
            `${rows.length} of ${models.length} models`,
          ),
        );
      }
      for (const el of [q, prov, caps, maxPrice, speed, sort]) el.addEventListener("input", draw);
      draw();
      const found = discovery || {};
      const fresh = found.new || [];
      const updated = found.updated || [];
      const deprecated = found.deprecated || [];
      return [
        h("div", { class: "filters" }, field("Search", q), field("Provider", prov), field("Capability", caps), field("Max output price", maxPrice), field("Latency", speed), field("Sort by", sort)),
        body,
        ADMIN
          ? section("Discovery",
              fresh.length || updated.length || deprecated.length
                ? table(["Finding", "Model", "Provider", ""], [
                    ...fresh.map((n) => ["new", n.id, n.provider, button("Add", () => guarded(() => change("/admin/discovery/apply", { add: [n.id] })), { "aria-label": `Add ${n.id}` })]),
                    ...updated.map((u) => ["updated", u.model, u.provider || "", button("Update", () => guarded(() => change("/admin/discovery/apply", { update: [u.model] })), { "aria-label": `Update ${u.model}` })]),
                    ...deprecated.map((d) => ["deprecated", d.model, d.provider || "", button("Remove", () => { if (confirm(`Remove ${d.model} from the catalog?`)) guarded(() => change("/admin/discovery/apply", { remove: [d.model] })); }, { "aria-label": `Remove ${d.model}` })]),
                  ], "What the providers offer against the catalog")
                : h("p", { class: "muted" }, "Nothing new, updated or deprecated at the providers."),
              Object.keys(found.errors || {}).length ? h("p", { class: "warn" }, `Could not list: ${Object.entries(found.errors).map(([p, e]) => `${p} (${e})`).join(", ")}`) : null)
          : null,
      ];
    },

    async routes() {
      const [status, routeList, modelList] = await Promise.all([
        get("/v1/status"),
        ADMIN ? optional("/admin/routes") : null,
        ADMIN ? optional("/admin/models") : null,
      ]);
      const routeViews = Object.fromEntries(((routeList && routeList.data) || []).map((v) => [v.name, v]));
      const modelViews = Object.fromEntries(((modelList && modelList.data) || []).map((v) => [v.name, v]));
      const routes = Object.entries(status.routes || {});
      const models = Object.keys(status.models || {});
      return routes.map(([name, r]) => {
        const pick = h("select", {}, models.map((m) => h("option", { value: m, selected: m === r.models[0] }, m)));
        return h(
          "article",
          { class: "card route", "data-route": name, "aria-label": `route ${name}` },
          h("h2", {}, name),
          h("dl", {},
            h("dt", {}, "Strategy"), h("dd", {}, r.strategy),
            h("dt", {}, "Pool"), h("dd", { "data-testid": "pool" }, r.models.join(", ")),
            h("dt", {}, "Fallbacks"),
            h("dd", {}, r.fallbacks.length
              ? h("ol", { class: "chain", "data-testid": "fallbacks" }, r.fallbacks.map((f, i) => h("li", {}, f, ADMIN && r.fallbacks.length > 1
                  ? [
                      button("↑", () => guarded(() => moveFallback(name, r.fallbacks, i, -1)), { "aria-label": `Move ${f} up in ${name}`, disabled: i === 0 }),
                      button("↓", () => guarded(() => moveFallback(name, r.fallbacks, i, 1)), { "aria-label": `Move ${f} down in ${name}`, disabled: i === r.fallbacks.length - 1 }),
                    ]
                  : null)))
              : "—"),
          ),
          ADMIN
            ? h("div", { class: "actions" },
                field(`Primary model of ${name}`, pick),
                button("Switch", () => guarded(() => change(`/admin/routes/${encodeURIComponent(name)}/switch`, { model: pick.value })), { "aria-label": `Switch ${name}` }),
                h("a", { class: "button", href: `/ui/compare?route=${encodeURIComponent(name)}`, "aria-label": `Compare ${name} with its current model` }, "Compare with current"))
            : null,
          ADMIN && routeViews[name] ? limits(name, routeViews[name].config || {}, [...r.models, ...r.fallbacks], modelViews) : null,
        );
      });
    },

    async compare() {
      if (MODE === "readonly") return h("p", { class: "muted" }, "Comparisons need the master key or an org admin key: log in with one.");
      const params = new URLSearchParams(location.search);
      const [status, runs, recs, ...bySource] = await Promise.all([
        get("/v1/status"),
        optional("/admin/comparisons"),
        optional("/admin/recommendations?days=7"),
        ...SOURCES.map((src) => optional(`/v1/stats?group_by=model&source=${src}&since=${encodeURIComponent(ago(24 * 7))}`)),
      ]);
      const models = Object.keys(status.models || {});
      const routeName = params.get("route");
      const route = routeName && status.routes ? status.routes[routeName] : null;
      const preset = new Set(route ? [route.models[0], ...route.fallbacks] : []);
      const boxes = models.map((m) => h("input", { type: "checkbox", value: m, checked: preset.has(m) ? true : null, "aria-label": `Compare ${m}` }));
      const prompts = h("textarea", { rows: 6, spellcheck: "false" });
      prompts.value = compareDraft.prompts;
      prompts.addEventListener("input", () => (compareDraft.prompts = prompts.value));
      const grader = h("select", {}, [["", "none (figures only)"], ["contains", "contains expected"], ["exact", "exact"], ["json_valid", "valid JSON"], ["numeric", "numeric"]].map(([v, l]) => h("option", { value: v }, l)));
      const iterations = h("input", { type: "number", min: 1, max: 20, value: 1 });
      const cap = h("input", { type: "number", min: 0, step: "any", placeholder: "no cap" });
      const name = h("input", { type: "text", maxlength: 200, value: route ? `${routeName}: compare with current` : "" });
      async function start() {
        const picked = boxes.filter((b) => b.checked).map((b) => b.value);
        const body = { models: picked.length ? picked : route ? [] : picked, prompts: prompts.value, iterations: Number(iterations.value) || 1, name: name.value || null };
        if (grader.value) body.graders = [grader.value];
        if (cap.value) body.max_cost_usd = Number(cap.value);
        if (route) {
          body.route = routeName;
          body.models = picked.filter((m) => m !== route.models[0]);
          if (!body.models.length) body.models = picked;
        }
        const out = (await call("/admin/comparisons", { method: "POST", body })).data;
        toast(`Started ${out.id}: ${out.calls} calls, expected $${Number(out.estimate_usd).toFixed(6)}`);
        follow(out.id, out.calls);
      }
      const form = h("form", { class: "card editor compare-form", "aria-label": "New comparison", onsubmit: (e) => { e.preventDefault(); guarded(start); } },
        h("fieldset", {}, h("legend", {}, "Models (1 to 8)"), h("div", { class: "checks" }, boxes.map((b) => h("label", { class: "check" }, b, " ", b.value)))),
        field("Prompts (JSONL: one {\"prompt\": ..., \"expected\": ...} per line)", prompts),
        h("div", { class: "row" }, field("Grader", grader), field("Iterations", iterations), field("Cost cap (USD)", cap), field("Run name", name)),
        h("button", { type: "submit" }, route ? `Compare with ${route.models[0]}` : "Run comparison"),
      );
      const progress = following
        ? h("div", { class: "card", id: "cmp-follow" },
            h("progress", { id: "cmp-progress", max: following.total || 1, value: following.done, "aria-label": `Comparison ${following.id} progress` }),
            h("span", { id: "cmp-progress-text", class: "muted" }, ` ${following.done} of ${following.total} calls, ${usd(following.spent)}`))
        : null;
      const list = (runs && runs.data) || [];
      const chosen = selectedRun || (list.find((r) => r.status !== "running") || {}).id;
      const detail = chosen ? await optional(`/admin/comparisons/${encodeURIComponent(chosen)}`) : null;
      return [
        section(route ? `Compare ${routeName} with its current model` : "New comparison", form, progress),
        section("Runs", list.length
          ? table(["Run", "Status", "Models", "Prompts × iterations", "Spent", "Started", ""], list.map((r) => [
              r.name || r.id, badge(r.status), r.models.join(", "), `${r.prompts} × ${r.iterations}`, usd(r.spent_usd), (r.created_at || "").replace("T", " ").slice(0, 19),
              h("span", {}, button("View", () => { selectedRun = r.id; refresh(); }, { "aria-label": `View ${r.name || r.id}` }), " ",
                h("a", { href: `/admin/comparisons/${encodeURIComponent(r.id)}/report`, target: "_blank", rel: "noopener" }, "Report")),
            ]), "Comparison runs")
          : h("p", { class: "muted" }, "No comparison yet.")),
        detail && detail.result ? runResult(detail.result) : null,
        section("Recommendations from production (7 days)", productionRecs((recs && recs.data) || [])),
        section("Production, canary and shadow side by side (7 days)", sideBySide(bySource)),
      ];
    },

    async usage() {
      const range = h("select", {}, [["24", "24 h"], ["168", "7 d"], ["720", "30 d"]].map(([v, l]) => h("option", { value: v }, l)));
      const dim = h("select", {}, ["model", "route", "provider", "org", "key"].map((d) => h("option", { value: d }, d)));
      const out = h("div");
      const csv = h("a", { class: "button", href: "#", download: "usage.csv" }, "Export CSV");
      async function draw() {
        const hours = Number(range.value);
        const since = encodeURIComponent(ago(hours));
        const bucket = hours <= 24 ? "hour" : "day";
        const [series, groups] = await Promise.all([get(`/v1/stats?group_by=${bucket}&since=${since}`), get(`/v1/stats?group_by=${dim.value}&since=${since}`)]);
        csv.setAttribute("href", `/ui/usage.csv?group_by=${dim.value}&hours=${hours}`);
        const rows = buckets(series.data || [], bucket, hours);
        const t = series.total || {};
        out.replaceChildren(
          h("div", { class: "cards" },
            h("div", { class: "card stat" }, h("div", { class: "label" }, "Requests"), h("div", { class: "big" }, num(t.requests || 0))),
            h("div", { class: "card stat" }, h("div", { class: "label" }, "Cost"), h("div", { class: "big" }, usd(t.cost_usd || 0))),
            h("div", { class: "card stat" }, h("div", { class: "label" }, "Savings vs baseline"), h("div", { class: "big" }, usd(t.savings_usd))),
            h("div", { class: "card stat" }, h("div", { class: "label" }, "Error rate"), h("div", { class: "big" }, t.requests ? pct(1 - (t.success_rate ?? 1)) : "—"))),
          h("div", { class: "charts" },
            chart("Requests", rows, (r) => r.requests, num),
            chart("Cost (USD)", rows, (r) => r.cost_usd, usd),
            chart("Tokens", rows, (r) => (r.tokens_in || 0) + (r.tokens_out || 0), num),
            chart("p50 latency (ms)", rows, (r) => r.latency_p50_ms, ms),
            chart("p95 latency (ms)", rows, (r) => r.latency_p95_ms, ms),
            chart("Error rate", rows, (r) => (r.requests ? r.failures / r.requests : 0), pct),
            chart("Fallbacks", rows, (r) => r.fallbacks, num)),
          table(
            [dim.value, "Requests", "Success", "Tokens in / out", "Cost", "p50", "p95", "Fallbacks"],
            (groups.data || []).map((r) => [r.key ?? "—", num(r.requests), pct(r.success_rate), `${num(r.tokens_in)} / ${num(r.tokens_out)}`, usd(r.cost_usd), ms(r.latency_p50_ms), ms(r.latency_p95_ms), num(r.fallbacks)]),
            `By ${dim.value}`,
          ),
        );
      }
      range.addEventListener("input", () => guarded(draw));
      dim.addEventListener("input", () => guarded(draw));
      await draw();
      return [h("div", { class: "filters" }, field("Range", range), field("Group by", dim), csv), out];
    },

    async local() {
      const snap = await get("/v1/status/local");
      const rows = [];
      for (const [provider, p] of Object.entries(snap.providers || {}))
        for (const [model, m] of Object.entries(p.models || {})) rows.push({ provider, model, m });
      const local = await optional("/admin/config");
      return [
        rows.length
          ? table(
              ["Model", "Provider", "State", "Memory", "Keep-alive", ADMIN ? "Actions" : ""],
              rows.map(({ provider, model, m }) => {
                const name = (m.configured_as || [])[0] || model;
                const p = m.progress || {};
                const progress = m.state === "loading" && p.total ? ` ${Math.round((100 * (p.completed || 0)) / p.total)} %` : "";
                return [
                  h("span", { "data-local": name }, name),
                  provider,
                  h("span", { "data-state": m.state }, badge(m.state), progress),
                  m.memory_bytes ? `${(m.memory_bytes / 2 ** 20).toFixed(0)} MiB` : "—",
                  m.unloads_in_s !== undefined && m.unloads_in_s !== null ? `unloads in ${Math.round(m.unloads_in_s)} s` : m.keep_alive_s ? `${m.keep_alive_s} s idle` : "—",
                  ADMIN
                    ? h("div", { class: "actions" },
                        button("Load", () => guarded(() => call(`/admin/models/${encodeURIComponent(name)}/load`, { method: "POST" })), { "aria-label": `Load ${name}` }),
                        button("Unload", () => guarded(() => call(`/admin/models/${encodeURIComponent(name)}/unload`, { method: "POST" })), { "aria-label": `Unload ${name}` }))
                    : "",
                ];
              }),
            )
          : h("p", { class: "muted" }, "No local providers (Ollama, llama.cpp) are configured."),
        ADMIN && local
          ? section("Force local only", h("p", {}, "Deploys a revision that sets local_only on every route (requests may then use local models only)."),
              h("div", { class: "actions" },
                button("Force local only", () => guarded(() => setLocalOnly(local.document, true))),
                button("Allow cloud models", () => guarded(() => setLocalOnly(local.document, false)))))
          : null,
      ];
    },

    async config() {
      if (!ADMIN) return [h("p", { class: "muted" }, "Config revisions need the master key.")];
      const [revs, audit] = await Promise.all([get("/admin/config/revisions?limit=30"), get("/admin/audit?limit=50")]);
      const diff = h("pre", { class: "diff", tabindex: 0, "aria-label": "diff" }, kept.diff || "");
      const list = revs.data || [];
      const active = list.find((r) => r.active) || list[0];
      const action = h("input", { type: "search", placeholder: "action, e.g. route.switch" });
      const auditBody = h("div");
      function drawAudit() {
        const f = action.value.trim();
        auditBody.replaceChildren(table(["When", "Who", "Action", "Target"], (audit.data || []).filter((a) => !f || String(a.action).includes(f)).map((a) => [a.ts || "", a.actor || "", a.action || "", a.target || ""])));
      }
      action.addEventListener("input", drawAudit);
      drawAudit();
      return [
        section("Revisions",
          table(
            ["Revision", "When", "Who", "Message", ""],
            list.map((r) => [
              h("span", {}, `#${r.id}`, r.active || (active && r.id === active.id) ? " (active)" : ""),
              r.created_at || "",
              r.actor || "",
              r.message || "",
              h("div", { class: "actions" },
                button("Diff", () => guarded(async () => {
                  const d = await get(`/admin/config/revisions/${r.id}`);
                  kept.diff = `revision ${r.id} against its parent:\n${d.diff_parent || "(no changes)"}`;
                }), { "aria-label": `Diff of revision ${r.id}` }),
                r.id !== (active && active.id)
                  ? button("Roll back to this", () => {
                      if (confirm(`Roll back to revision ${r.id}? This deploys it as a new revision.`)) guarded(() => change("/admin/config/rollback", { revision: r.id }));
                    }, { "aria-label": `Roll back to revision ${r.id}` })
                  : null),
            ]),
          ),
          diff),
        section("Audit log", field("Filter by action", action), auditBody),
      ];
    },

    async keys() {
      if (MODE === "readonly") return [h("p", { class: "muted" }, "Keys need a master key.")];
      const [keys, orgs, budgets, events] = await Promise.all([get("/admin/keys"), get("/admin/orgs"), optional("/admin/budgets"), optional("/admin/budget-events?limit=20")]);
      const orgList = orgs.data || [];
      const orgPick = h("select", {}, orgList.map((o) => h("option", { value: o.id }, o.name || o.id)));
      const nameIn = h("input", { type: "text", required: true, maxlength: 200 });
      const shown = h("p", { class: "once", role: "status" }, kept.newKey ? ["New key (shown once): ", h("code", { "data-testid": "new-key" }, kept.newKey)] : null);
      kept.newKey = null; // shown once: the next redraw forgets it
      const orgName = h("input", { type: "text", maxlength: 200 });
      return [
        section("Create a key",
          h("form", { class: "inline", onsubmit: (e) => { e.preventDefault(); guarded(async () => {
            const k = (await call("/admin/keys", { method: "POST", body: { org_id: orgPick.value, name: nameIn.value } })).data;
            kept.newKey = k.key;
          }); } }, field("Organisation", orgPick), field("Key name", nameIn), h("button", { type: "submit" }, "Create key")),
          shown),
        section("Keys",
          table(
            ["Name", "Key", "Organisation", "Role", "Status", ""],
            (keys.data || []).map((k) => [
              h("span", { "data-key": k.name }, k.name),
              k.display || `${k.prefix || ""}…`,
              k.org_id,
              k.role || "app",
              badge(k.revoked_at ? "revoked" : "active"),
              k.revoked_at ? "" : button("Revoke", () => { if (confirm(`Revoke ${k.name}?`)) guarded(() => call(`/admin/keys/${encodeURIComponent(k.id)}/revoke`, { method: "POST" })); }, { "aria-label": `Revoke ${k.name}` }),
            ]),
          )),
        section("Organisations",
          table(["Name", "Id"], orgList.map((o) => [o.name, o.id])),
          ADMIN ? h("form", { class: "inline", onsubmit: (e) => { e.preventDefault(); guarded(() => call("/admin/orgs", { method: "POST", body: { name: orgName.value } })); } }, field("New organisation", orgName), h("button", { type: "submit" }, "Create organisation")) : null),
        section("Budgets", ((budgets && budgets.data) || []).length ? budgets.data.map(gauge) : h("p", { class: "muted" }, "No budgets configured.")),
        section("Budget events", table(["When", "Budget", "Event", "Message"], ((events && events.data) || []).map((e) => [e.ts, e.budget, e.kind, e.message || ""]))),
      ];
    },
  };

  // the last connection test per provider, and what a page shows until the next redraw
  const tested = {};
  const kept = { diff: "", newKey: null, open: new Set() };
  async function testProvider(name) {
    tested[name] = { state: "", text: "Testing…" };
    refresh();
    try {
      const r = (await call(`/admin/providers/${encodeURIComponent(name)}/test`, { method: "POST" })).data;
      const ok = r.reachable && r.auth_ok !== false && (!r.probe || r.probe.ok);
      const probe = r.probe ? `, probe of ${r.probe.model} ${r.probe.ok ? "ok" : `failed: ${r.probe.error}`}` : "";
      tested[name] = ok
        ? { state: "healthy", text: `OK: reachable in ${ms(r.latency_ms)}, ${r.model_count} models listed${probe}` }
        : { state: "unhealthy", text: `Failed: ${r.error || (r.probe && r.probe.error) || "not reachable"}` };
    } catch (e) {
      tested[name] = { state: "unhealthy", text: `Failed: ${e.message}` };
    }
  }

  // "use in a route": make this model the route's primary (a switch, so a deploy)
  function useIn(model, routes) {
    if (!routes.length) return null;
    const pick = h("select", { "aria-label": `Route for ${model}` }, routes.map((r) => h("option", { value: r }, r)));
    return h("span", { class: "use" }, pick, button("Use", () => guarded(() => change(`/admin/routes/${encodeURIComponent(pick.value)}/switch`, { model })), { "aria-label": `Use ${model} in the chosen route` }));
  }

  // a route's timeout, retries and attempts, and each of its models' timeout and rate limits
  function limits(route, config, chain, modelViews) {
    const num_ = (value, label, attrs = {}) => field(label, h("input", { type: "number", min: 0, step: "any", value: value ?? "", ...attrs }));
    const timeout = num_(config.timeout_s, `Timeout (s) of ${route}`);
    const retries = num_(config.retries ?? 1, `Retries of ${route}`, { step: 1 });
    const attempts = num_(config.max_attempts ?? 4, `Max attempts of ${route}`, { step: 1, min: 1 });
    const value = (f) => f.querySelector("input").value;
    const opt = (v) => (v === "" ? null : Number(v));
    const perModel = [...new Set(chain)].map((m) => {
      const c = (modelViews[m] || {}).config || {};
      const t = num_(c.timeout_s, `Timeout (s) of ${m}`);
      const rpm = num_(c.rpm, `Requests per minute of ${m}`, { step: 1, min: 1 });
      const conc = num_(c.max_concurrency, `Concurrency of ${m}`, { step: 1, min: 1 });
      return h("fieldset", {}, h("legend", {}, m), t, rpm, conc,
        button("Save", () => guarded(() => change(`/admin/models/${encodeURIComponent(m)}`, { config: { timeout_s: opt(value(t)), rpm: opt(value(rpm)), max_concurrency: opt(value(conc)) } }, "PATCH")), { "aria-label": `Save limits of ${m}` }));
    });
    const box = h("details", { class: "limits", open: kept.open.has(route) }, h("summary", {}, "Timeouts, retries and rate limits"),
      h("fieldset", {}, h("legend", {}, `route ${route}`), timeout, retries, attempts,
        button("Save", () => guarded(() => change(`/admin/routes/${encodeURIComponent(route)}`, { config: { timeout_s: opt(value(timeout)), retries: Number(value(retries)), max_attempts: Number(value(attempts)) } }, "PATCH")), { "aria-label": `Save limits of ${route}` })),
      perModel);
    box.addEventListener("toggle", () => (box.open ? kept.open.add(route) : kept.open.delete(route)));
    return box;
  }

  async function moveFallback(route, fallbacks, i, by) {
    const order = [...fallbacks];
    [order[i], order[i + by]] = [order[i + by], order[i]];
    await change(`/admin/routes/${encodeURIComponent(route)}`, { config: { fallbacks: order } }, "PATCH");
  }

  async function setLocalOnly(doc, on) {
    const routes = Object.fromEntries(Object.keys(doc.routes || {}).map((r) => [r, { local_only: on }]));
    await change("/admin/config/deploy", { patch: { routes } });
  }

  // the provider form: each kind shows its own keys (config/schema.py), with the kind's defaults as hints
  const PROVIDER_KINDS = {
    openai: { help: "The OpenAI API, or any endpoint that speaks it (vLLM, LM Studio, a hosted gateway).", url: "https://api.openai.com/v1", keys: ["base_url", "api_key", "local", "timeout_s"] },
    anthropic: { help: "Anthropic's Messages API.", url: "https://api.anthropic.com", keys: ["base_url", "api_key", "api_version", "timeout_s"] },
    gemini: { help: "Google AI's Gemini API.", url: "https://generativelanguage.googleapis.com", keys: ["base_url", "api_key", "timeout_s"] },
    ollama: { help: "An Ollama server: its models are pulled, loaded and unloaded there.", url: "http://localhost:11434", keys: ["base_url", "keep_alive", "preload", "max_loaded", "memory_budget_mb", "auto_pull", "timeout_s"] },
    llamacpp: { help: "GGUF files run inside the gateway by llama-cpp-python.", keys: ["models_dir", "n_ctx", "n_threads", "keep_alive", "preload", "max_loaded", "memory_budget_mb"] },
  };
  const PROVIDER_KEYS = {
    base_url: { label: "Base URL", type: "url" },
    api_key: { label: "API key", type: "password" },
    api_version: { label: "anthropic-version header", type: "text", hint: "the adapter's own version" },
    local: { label: "Runs on this machine or network", type: "checkbox" },
    timeout_s: { label: "Timeout per attempt (s)", type: "number", hint: "60" },
    keep_alive: { label: "Keep loaded when idle", type: "text", hint: "30m; -1 never unloads; 0 at once" },
    preload: { label: "Load at start-up (comma-separated models)", type: "list" },
    max_loaded: { label: "Models loaded at once", type: "integer" },
    memory_budget_mb: { label: "Memory budget (MB)", type: "number" },
    auto_pull: { label: "Pull a missing model", type: "checkbox" },
    models_dir: { label: "Folder of .gguf files", type: "text", hint: "the models directory" },
    n_ctx: { label: "Context size (tokens)", type: "integer", hint: "4096" },
    n_threads: { label: "Threads per model", type: "integer", hint: "all cores" },
  };

  function editProvider(name, view) {
    const box = document.getElementById("editor");
    const cfg = (view && view.config) || {};
    const nameIn = h("input", { type: "text", value: name || "", required: true, readonly: name ? true : null, pattern: "[A-Za-z0-9_.\\-]+" });
    const kind = h("select", {}, Object.keys(PROVIDER_KINDS).map((k) => h("option", { value: k, selected: (cfg.kind || "openai") === k }, k)));
    const help = h("p", { class: "muted", id: id("kindhelp") });
    kind.setAttribute("aria-describedby", help.id);
    const typed = {}; // what was typed, kept across kind changes
    const keysBox = h("div", {});
    const inputs = {};
    const draw = () => {
      const spec = PROVIDER_KINDS[kind.value];
      help.textContent = spec.help;
      for (const k of Object.keys(inputs)) delete inputs[k];
      keysBox.replaceChildren(...spec.keys.map((k) => {
        const f = PROVIDER_KEYS[k];
        const value = k in typed ? typed[k] : cfg[k];
        let input;
        if (f.type === "checkbox") input = h("input", { type: "checkbox", checked: value ? true : null });
        else if (k === "api_key") input = h("input", { type: "password", autocomplete: "off", placeholder: name ? "unchanged" : "stored encrypted" });
        else {
          const shown = Array.isArray(value) ? value.join(", ") : value ?? "";
          const numeric = f.type === "number" || f.type === "integer";
          input = h("input", { type: numeric ? "number" : f.type === "url" ? "url" : "text", value: shown, placeholder: k === "base_url" ? spec.url : f.hint || "", ...(numeric ? { min: 0, step: f.type === "integer" ? 1 : "any" } : {}) });
        }
        input.addEventListener("input", () => { typed[k] = input.type === "checkbox" ? input.checked : input.value; });
        inputs[k] = input;
        return field(f.label, input);
      }));
    };
    kind.addEventListener("change", draw);
    draw();
    const read = (k) => {
      const f = PROVIDER_KEYS[k];
      const input = inputs[k];
      if (f.type === "checkbox") return input.checked ? true : null;
      const v = input.value.trim();
      if (v === "") return null;
      if (f.type === "number" || f.type === "integer") return Number(v);
      if (f.type === "list") return v.split(",").map((x) => x.trim()).filter(Boolean);
      return v;
    };
    const form = h(
      "form",
      { class: "card editor", "aria-label": name ? `Edit ${name}` : "Add a provider", onsubmit: (e) => {
        e.preventDefault();
        guarded(async () => {
          const config = { kind: kind.value };
          for (const k of Object.keys(inputs)) {
            const v = read(k);
            if (k === "api_key") { if (v) config.api_key = v; continue; } // moved to the encrypted credential store on deploy
            if (v !== null) config[k] = v;
            else if (name) config[k] = null; // a merge patch: an emptied field goes back to its default
          }
          if (name) {
            // keys the new kind does not have are removed (a kind change), so the config stays valid
            const mine = new Set(PROVIDER_KINDS[kind.value].keys);
            for (const k of Object.keys(PROVIDER_KEYS)) if (!mine.has(k) && k in cfg) config[k] = null;
            await change(`/admin/providers/${encodeURIComponent(name)}`, { config }, "PATCH");
          } else await change("/admin/providers", { name: nameIn.value, config });
          box.replaceChildren();
        });
      } },
      h("h2", {}, name ? `Edit ${name}` : "Add a provider"),
      field("Name", nameIn), field("Kind", kind), help, keysBox,
      h("div", { class: "actions" }, h("button", { type: "submit" }, "Save and deploy"), button("Cancel", () => box.replaceChildren())),
    );
    box.replaceChildren(form);
    (name ? kind : nameIn).focus();
  }

  // every hour (or day) of the range, empty ones included, so bars sit where their time is
  function buckets(rows, bucket, hours) {
    const byKey = Object.fromEntries(rows.map((r) => [r.key, r]));
    const out = [];
    const step = bucket === "hour" ? 3600e3 : 86400e3;
    const now = Date.now();
    for (let t = now - (hours - 1) * 3600e3; t <= now + 1; t += step) {
      const iso = new Date(t).toISOString();
      const key = bucket === "hour" ? `${iso.slice(0, 13)}:00:00Z` : iso.slice(0, 10);
      if (!out.length || out[out.length - 1].key !== key) out.push(byKey[key] || { key });
    }
    return out;
  }

  // one small SVG bar chart per figure, drawn here (no chart library)
  function chart(title, rows, value, fmt) {
    const W = 320, H = 120, P = 4;
    const values = rows.map((r) => Number(value(r)) || 0);
    const max = Math.max(...values, 0) || 1;
    const w = values.length ? (W - 2 * P) / values.length : 0;
    const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `${title}: ${values.length ? `${fmt(Math.max(...values))} at most` : "no data"}` },
      s("title", {}, title),
      values.map((v, i) => s("rect", { x: P + i * w + 1, y: H - P - (v / max) * (H - 2 * P), width: Math.max(w - 2, 1), height: (v / max) * (H - 2 * P), class: "barv" }, s("title", {}, `${rows[i].key}: ${fmt(v)}`))));
    const span = rows.length ? h("div", { class: "axis muted" }, h("span", {}, String(rows[0].key).replace("T", " ").replace(":00:00Z", "h")), h("span", {}, String(rows[rows.length - 1].key).replace("T", " ").replace(":00:00Z", "h"))) : null;
    return h("figure", { class: "card chart" }, h("figcaption", {}, title, " ", h("span", { class: "muted" }, values.length ? `max ${fmt(Math.max(...values))}` : "no data")), svg, span);
  }

  // -- drawing and live updates --------------------------------------------------------------------

  let drawing = null;
  let again = false;
  async function refresh() {
    if (drawing) {
      again = true;
      return;
    }
    drawing = (async () => {
      const focused = document.activeElement && document.activeElement.getAttribute("aria-label");
      try {
        const kids = await pages[PAGE]();
        const keep = app.querySelector("#editor");
        app.replaceChildren(h("h1", {}, document.title.split(" · ")[0]), ...[kids].flat(Infinity).filter(Boolean));
        if (keep && keep.childElementCount) app.querySelector("#editor").replaceWith(keep);
        if (focused) {
          const el = app.querySelector(`[aria-label="${CSS.escape(focused)}"]`);
          if (el) el.focus();
        }
      } catch (e) {
        app.replaceChildren(h("h1", {}, document.title.split(" · ")[0]), h("p", { class: "error", role: "alert" }, e.message));
      }
    })();
    await drawing;
    drawing = null;
    if (again) {
      again = false;
      refresh();
    }
  }

  // pages whose figures move: redraw on admin events, and every few seconds (health, lifecycle)
  const LIVE = { overview: 3000, providers: 2000, local: 1000, models: 5000, routes: 5000 };
  refresh();
  if (LIVE[PAGE]) {
    setInterval(() => {
      if (!document.hidden && !app.querySelector("form.editor, details[open], input:focus, select:focus")) refresh();
    }, LIVE[PAGE]);
    if (MODE !== "readonly" && window.EventSource) {
      const events = new EventSource("/admin/events");
      events.onmessage = () => refresh();
      for (const kind of ["provider.health", "breaker.open", "breaker.closed", "config.activated", "local.load", "local.unload", "audit"]) events.addEventListener(kind, () => refresh());
      events.onerror = () => {};
    }
  }
})();
