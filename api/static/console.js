"use strict";
// The console: plain DOM, the manager API over the session cookie, server-sent events.
const $ = (sel) => document.querySelector(sel);
const PAGE = 20;
const state = { stores: [], offsets: { stores: 0, campaigns: 0, audit: 0 }, totals: {}, campaigns: [] };

async function api(path, options = {}) {
  const json = !(options.body instanceof FormData);
  const response = await fetch(path, {
    credentials: "same-origin",
    ...options,
    headers: { ...(json ? { "Content-Type": "application/json" } : {}), "X-Console": "1", ...(options.headers || {}) },
  });
  if (response.status === 401) { location.href = "/console/login"; throw new Error("session ended"); }
  const body = response.headers.get("content-type")?.includes("json") ? await response.json() : null;
  if (!response.ok) {
    const message = body?.error?.message || `${response.status} ${response.statusText}`;
    throw new Error(message);
  }
  return body;
}

function showError(err) { const e = $("#error"); e.textContent = err ? String(err.message || err) : ""; e.hidden = !err; }
function status(text) { $("#status").textContent = text; }
function cell(row, text, cls) { const td = document.createElement("td"); td.textContent = text; if (cls) td.className = cls; row.append(td); return td; }
function query(form) {
  const params = new URLSearchParams();
  for (const [k, v] of new FormData(form)) if (String(v).trim()) params.set(k, String(v).trim());
  return params;
}

function pager(name, reload) {
  const box = document.querySelector(`.pager[data-list="${name}"]`);
  const offset = state.offsets[name], total = state.totals[name] || 0;
  const prev = document.createElement("button"); prev.type = "button"; prev.textContent = "Previous"; prev.className = "secondary";
  prev.disabled = offset === 0; prev.onclick = () => { state.offsets[name] = Math.max(0, offset - PAGE); reload(); };
  const next = document.createElement("button"); next.type = "button"; next.textContent = "Next"; next.className = "secondary";
  next.disabled = offset + PAGE >= total; next.onclick = () => { state.offsets[name] = offset + PAGE; reload(); };
  const info = document.createElement("span");
  info.textContent = total ? `${offset + 1}–${Math.min(offset + PAGE, total)} of ${total}` : "none";
  box.replaceChildren(prev, info, next);
}

const DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
// The same range on every day, or null when either end is blank.
function everyDay(from, until) { return from && until ? Object.fromEntries(DAYS.map((d) => [d, [[from, until]]])) : null; }
// The range of a schedule that is the same every day (what the console edits), else blanks.
function dailyRange(hours) {
  const ranges = hours ? DAYS.map((d) => JSON.stringify(hours[d] || [])) : [];
  const [first] = ranges;
  if (!first || !ranges.every((r) => r === first)) return ["", ""];
  const parsed = JSON.parse(first);
  return parsed.length === 1 ? parsed[0] : ["", ""];
}
// <input type="datetime-local"> holds UTC here: "2026-11-23T09:00" <-> "2026-11-23T09:00:00Z".
const toUtc = (local) => (local ? `${local}:00Z` : null);
const fromUtc = (iso) => (iso ? iso.slice(0, 16) : "");
const numberOrNull = (input) => (input.value.trim() === "" ? null : Number(input.value));

// --- map and stores ----------------------------------------------------------------------
let map, fenceLayer;
async function setupMap() {
  const config = await api("/console/config.json");
  map = L.map("map", { zoomControl: true, attributionControl: Boolean(config.tile_url) });
  if (config.tile_url) L.tileLayer(config.tile_url, { maxZoom: 19 }).addTo(map);
  fenceLayer = L.featureGroup().addTo(map);
  map.setView([0, 0], 2);
  map.on("click", (e) => {
    const f = $("#store-form").elements;
    f.lon.value = e.latlng.lng.toFixed(6); f.lat.value = e.latlng.lat.toFixed(6);
    $("#store-add").open = true;
  });
}

async function addStore(event) {
  event.preventDefault();
  const f = event.target.elements;
  const body = { name: f.name.value.trim(), timezone: f.timezone.value.trim(),
    tags: f.tags.value.split(",").map((t) => t.trim()).filter(Boolean),
    fence: { lon: Number(f.lon.value), lat: Number(f.lat.value), radius_m: Number(f.radius_m.value) } };
  const hours = everyDay(f.opens.value, f.closes.value);
  if (hours) body.opening_hours = hours;
  await act(async () => {
    await api("/v1/manager/stores", { method: "POST", body: JSON.stringify(body) });
    event.target.reset();
    await loadStores(); await loadAudit();
  }, `store ${body.name} added`);
}

async function importStores(event) {
  event.preventDefault();
  const data = new FormData(event.target);
  await act(async () => {
    const report = await api("/v1/manager/stores/import", { method: "POST", body: data });
    status(`import: ${report.created} created, ${report.updated} updated, ${report.rejected_count} rejected`);
    await loadStores(); await loadAudit();
  });
}

async function saveTags(store, input) {
  const tags = input.value.split(",").map((t) => t.trim()).filter(Boolean);
  await act(async () => {
    await api(`/v1/manager/stores/${store.id}`, { method: "PATCH", body: JSON.stringify({ tags }) });
    await loadStores(); await loadAudit();
  }, `tags of ${store.name} saved`);
}

function drawFences(stores) {
  fenceLayer.clearLayers();
  for (const store of stores) {
    for (const f of store.fences) {
      const layer = f.geometry
        ? L.geoJSON(f.geometry, { style: { color: "#0b5cad", weight: 2 } })
        : L.circle([f.lat, f.lon], { radius: f.radius_m, color: "#0b5cad", weight: 2 });
      layer.bindTooltip(store.name);
      layer.addTo(fenceLayer);
    }
  }
  if (fenceLayer.getLayers().length) map.fitBounds(fenceLayer.getBounds(), { padding: [20, 20], maxZoom: 17 });
}

async function loadStores() {
  const params = query($("#store-filter"));
  params.set("limit", PAGE); params.set("offset", state.offsets.stores);
  const body = await api(`/v1/manager/stores?${params}`);
  state.totals.stores = body.page.total;
  const rows = $("#store-rows"); rows.replaceChildren();
  for (const s of body.items) {
    const tr = document.createElement("tr");
    cell(tr, s.name);
    const tagCell = cell(tr, "");
    const input = document.createElement("input"); input.value = s.tags.join(", ");
    input.setAttribute("aria-label", `Tags of ${s.name}`); input.size = 16;
    const save = document.createElement("button"); save.type = "button"; save.className = "secondary";
    save.textContent = "Save"; save.setAttribute("aria-label", `Save tags of ${s.name}`);
    save.onclick = () => saveTags(s, input);
    tagCell.append(input, " ", save);
    const [opens, closes] = dailyRange(s.opening_hours);
    cell(tr, !s.opening_hours ? "always open" : opens ? `${opens}–${closes} daily` : "by day (see API)");
    cell(tr, s.fences.map((f) => f.kind).join(", ")); cell(tr, s.id);
    rows.append(tr);
  }
  drawFences(body.items);
  pager("stores", loadStores);
  const all = await api("/v1/manager/stores?limit=500");
  state.stores = all.items;
  renderStoreChoices();
}

function renderStoreChoices(selected = []) {
  const box = $("#store-choices"); box.replaceChildren();
  for (const s of state.stores) {
    const label = document.createElement("label");
    const input = document.createElement("input");
    input.type = "checkbox"; input.name = "store_ids"; input.value = s.id; input.checked = selected.includes(s.id);
    label.append(input, ` ${s.name}`);
    box.append(label);
  }
}

// --- campaigns ---------------------------------------------------------------------------
async function loadCampaigns() {
  const params = query($("#campaign-filter"));
  params.set("limit", PAGE); params.set("offset", state.offsets.campaigns);
  const body = await api(`/v1/manager/campaigns?${params}`);
  state.totals.campaigns = body.page.total;
  state.campaigns = body.items;
  const rows = $("#campaign-rows"); rows.replaceChildren();
  for (const c of body.items) {
    const tr = document.createElement("tr");
    cell(tr, c.name); cell(tr, c.status); cell(tr, c.triggers.join(", "));
    cell(tr, [`${c.store_ids.length} store(s)`, ...c.store_tags.map((t) => `#${t}`)].join(" "));
    cell(tr, c.offers.map((o) => `${o.name} (${o.weight})`).join(", "));
    cell(tr, `${Math.round(c.holdout_share * 100)}%`); cell(tr, c.selection);
    const actions = cell(tr, "");
    const edit = document.createElement("button"); edit.type = "button"; edit.className = "secondary";
    edit.textContent = "Edit"; edit.setAttribute("aria-label", `Edit ${c.name}`); edit.onclick = () => openEditor(c);
    const toggle = document.createElement("button"); toggle.type = "button"; toggle.className = "secondary";
    toggle.textContent = c.status === "active" ? "Pause" : "Resume";
    toggle.setAttribute("aria-label", `${toggle.textContent} ${c.name}`);
    toggle.onclick = () => act(async () => {
      await api(`/v1/manager/campaigns/${c.id}/${c.status === "active" ? "pause" : "resume"}`, { method: "POST" });
      await loadCampaigns();
      await loadAudit();
    }, `${c.name}: ${toggle.textContent.toLowerCase()}d`);
    const stats = document.createElement("button"); stats.type = "button"; stats.className = "secondary";
    stats.textContent = "Analytics"; stats.setAttribute("aria-label", `Analytics of ${c.name}`);
    stats.onclick = () => { $("#analytics-campaign").value = c.id; location.hash = "#analytics"; act(loadFunnel); };
    actions.append(edit, toggle, stats);
    rows.append(tr);
  }
  pager("campaigns", loadCampaigns);
  const select = $("#analytics-campaign"), keep = select.value;
  const all = await api("/v1/manager/campaigns?limit=500");
  select.replaceChildren(...all.items.map((c) => new Option(c.name, c.id)));
  if (keep) select.value = keep;
}

function variantFields(v = {}) {
  const box = document.createElement("div"); box.className = "variant";
  const fields = [["name", "Variant name", v.name || "A"], ["title", "Title template", v.title || ""],
    ["body", "Body template", v.body || ""], ["discount_text", "Discount", v.discount_text || ""],
    ["valid_minutes", "Valid minutes", v.valid_minutes || 15], ["weight", "Weight", v.weight ?? 1],
    ["discount_amount", "Cost of one coupon (minor units, for the liability budget)", v.discount_amount ?? 0]];
  for (const [name, text, value] of fields) {
    const label = document.createElement("label"); label.textContent = `${text} `;
    const input = document.createElement("input"); input.name = `v_${name}`; input.value = value; input.required = true;
    if (["valid_minutes", "weight", "discount_amount"].includes(name)) {
      input.type = "number"; input.min = name === "valid_minutes" ? 1 : 0;
    }
    label.append(input); box.append(label);
  }
  const ruleLabel = document.createElement("label"); ruleLabel.textContent = "Validity ";
  const rule = document.createElement("select"); rule.name = "v_validity_rule";
  rule.append(new Option("fixed: valid minutes", "fixed"), new Option("sized to travel (pass-by ETA + valid minutes)", "travel"));
  rule.value = v.validity_rule || "fixed"; ruleLabel.append(rule); box.append(ruleLabel);
  const capLabel = document.createElement("label"); capLabel.textContent = "At most, minutes (needed for travel) ";
  const cap = document.createElement("input"); cap.name = "v_max_valid_minutes"; cap.type = "number"; cap.min = 1; cap.max = 1440;
  cap.value = v.max_valid_minutes ?? ""; capLabel.append(cap); box.append(capLabel);
  const label = document.createElement("label");
  const active = document.createElement("input"); active.type = "checkbox"; active.name = "v_active";
  active.checked = v.active ?? true;
  label.append(active, " Active (an inactive variant is never chosen)"); box.append(label);
  if (v.id) box.dataset.id = v.id;
  $("#variants").append(box);
}

function openEditor(c) {
  const form = $("#campaign-form");
  form.reset(); form.hidden = false;
  form.querySelectorAll(".variant").forEach((n) => n.remove());
  $("#editor-h").textContent = c ? `Edit ${c.name}` : "New campaign";
  form.elements.id.value = c?.id || "";
  renderStoreChoices(c?.store_ids || []);
  if (c) {
    form.elements.name.value = c.name;
    form.elements.store_tags.value = c.store_tags.join(", ");
    form.querySelectorAll('input[name="trigger"]').forEach((i) => { i.checked = c.triggers.includes(i.value); });
    form.elements.category.value = c.category || "";
    form.elements.daily_cap_per_shopper.value = c.daily_cap_per_shopper;
    form.elements.holdout_share.value = c.holdout_share;
    form.elements.visit_window_minutes.value = c.visit_window_minutes;
    form.elements.selection.value = c.selection;
    form.elements.starts_at.value = fromUtc(c.starts_at);
    form.elements.ends_at.value = fromUtc(c.ends_at);
    [form.elements.active_from.value, form.elements.active_until.value] = dailyRange(c.active_hours);
    form.elements.store_cooldown_minutes.value = c.store_cooldown_minutes;
    form.elements.max_coupons.value = c.budget?.max_coupons ?? "";
    form.elements.max_liability.value = c.budget?.max_liability ?? "";
    c.offers.forEach(variantFields);
  } else variantFields();
  form.elements.name.focus();
}

function readVariants() {
  return [...document.querySelectorAll("#variants .variant")].map((box) => {
    const get = (n) => box.querySelector(`[name="v_${n}"]`).value;
    return { id: box.dataset.id, name: get("name"), title: get("title"), body: get("body"),
      discount_text: get("discount_text"), valid_minutes: Number(get("valid_minutes")), weight: Number(get("weight")),
      discount_amount: Number(get("discount_amount")), validity_rule: get("validity_rule"),
      max_valid_minutes: numberOrNull(box.querySelector('[name="v_max_valid_minutes"]')),
      active: box.querySelector('[name="v_active"]').checked };
  });
}

// A new variant starts active; VariantIn has no such field.
function withoutActive({ active, ...v }) { return v; }

async function saveCampaign(event) {
  event.preventDefault();
  const form = event.target, f = form.elements;
  const body = {
    name: f.name.value.trim(),
    store_ids: [...form.querySelectorAll('input[name="store_ids"]:checked')].map((i) => i.value),
    store_tags: f.store_tags.value.split(",").map((t) => t.trim()).filter(Boolean),
    triggers: [...form.querySelectorAll('input[name="trigger"]:checked')].map((i) => i.value),
    category: f.category.value.trim() || null,
    daily_cap_per_shopper: Number(f.daily_cap_per_shopper.value),
    holdout_share: Number(f.holdout_share.value),
    visit_window_minutes: Number(f.visit_window_minutes.value),
    selection: f.selection.value,
  };
  const rules = {
    starts_at: toUtc(f.starts_at.value), ends_at: toUtc(f.ends_at.value),
    active_hours: everyDay(f.active_from.value, f.active_until.value),
    store_cooldown_minutes: numberOrNull(f.store_cooldown_minutes),
    max_coupons: numberOrNull(f.max_coupons), max_liability: numberOrNull(f.max_liability),
  };
  const variants = readVariants();
  await act(async () => {
    if (!f.id.value) {
      const created = variants.map(({ id, ...v }) => withoutActive(v));
      await api("/v1/manager/campaigns", { method: "POST", body: JSON.stringify({ ...body, ...rules, variants: created }) });
    } else {
      const id = f.id.value;
      await api(`/v1/manager/campaigns/${id}`, { method: "PATCH", body: JSON.stringify(body) });
      await api(`/v1/manager/campaigns/${id}/rules`, { method: "PATCH", body: JSON.stringify(rules) });
      // New variants first: a campaign keeps an active variant while an old one is switched off.
      for (const { id: offerId, ...v } of variants.filter((x) => !x.id)) {
        await api(`/v1/manager/campaigns/${id}/variants`, { method: "POST", body: JSON.stringify(withoutActive(v)) });
      }
      for (const { id: offerId, ...v } of variants.filter((x) => x.id)) {
        await api(`/v1/manager/campaigns/${id}/variants/${offerId}`, { method: "PATCH", body: JSON.stringify(v) });
      }
    }
    form.hidden = true;
    await loadCampaigns();
    await loadAudit();
  }, `campaign ${body.name} saved`);
}

// --- analytics ---------------------------------------------------------------------------
const FUNNEL = ["triggered", "suppressed", "held_out", "issued", "sent", "delivered", "opened", "redeemed", "expired", "visited", "purchased"];

async function loadFunnel() {
  const id = $("#analytics-campaign").value;
  if (!id) return;
  const group = new FormData($("#analytics-form")).get("group_by");
  const params = new URLSearchParams(group ? { group_by: group } : {});
  const data = await api(`/v1/manager/campaigns/${id}/funnel?${params}`);
  $("#csv-link").href = `/v1/manager/campaigns/${id}/funnel.csv?${params}`;
  const total = Object.fromEntries(FUNNEL.map((k) => [k, 0]));
  const reasons = {};
  for (const row of data.rows) {
    for (const k of FUNNEL) total[k] += row.counts[k];
    for (const [r, n] of Object.entries(row.suppressed_by)) reasons[r] = (reasons[r] || 0) + n;
  }
  const items = FUNNEL.map((k) => ({ label: k.replace("_", " "), value: total[k], cls: k === "held_out" ? "held" : "" }));
  for (const [r, n] of Object.entries(reasons)) items.splice(2, 0, { label: `  suppressed: ${r}`, value: n, cls: "held" });
  Charts.bars($("#funnel-chart"), items, "Funnel of the campaign");
  const keys = ["campaign", ...data.group_by];
  const head = document.createElement("tr");
  for (const k of [...keys, ...FUNNEL]) { const th = document.createElement("th"); th.scope = "col"; th.textContent = k; head.append(th); }
  $("#funnel-head").replaceChildren(head);
  const rows = $("#funnel-rows"); rows.replaceChildren();
  for (const row of data.rows) {
    const tr = document.createElement("tr");
    for (const k of keys) cell(tr, row.key[k] ?? "–");
    for (const k of FUNNEL) cell(tr, String(row.counts[k]), "num");
    rows.append(tr);
  }
  Charts.lift($("#lift-chart"), data.lift, "Lift against the holdout with 95% intervals");
  const pct = (v) => (v === null ? "–" : `${(v * 100).toFixed(1)}%`);
  const liftRows = $("#lift-rows"); liftRows.replaceChildren();
  for (const l of data.lift) {
    const tr = document.createElement("tr");
    cell(tr, l.metric);
    cell(tr, `${pct(l.treated_rate)} (${l.treated_successes}/${l.treated})`, "num");
    cell(tr, `${pct(l.held_out_rate)} (${l.held_out_successes}/${l.held_out})`, "num");
    cell(tr, l.lift === null ? "–" : `${(l.lift * 100).toFixed(1)} pp`, "num");
    cell(tr, l.lift === null ? "–" : `${(l.ci_low * 100).toFixed(1)} to ${(l.ci_high * 100).toFixed(1)} pp`, "num");
    liftRows.append(tr);
  }
  Charts.bars($("#redeem-chart"), data.time_to_redeem.map((b) => ({
    label: b.to_min === null ? `${b.from_min}+ min` : `${b.from_min}–${b.to_min} min`, value: b.count })), "Minutes from issue to redemption");
}

// --- live feed and audit -----------------------------------------------------------------
function startFeed() {
  const source = new EventSource("/v1/manager/events/stream");
  const list = $("#feed-items");
  const add = (kind, data) => {
    const li = document.createElement("li");
    const what = kind === "redemption" ? "redeemed" : `${data.trigger} → ${data.outcome}${data.reason ? ` (${data.reason})` : ""}`;
    li.textContent = `${data.at.slice(11, 19)} ${data.campaign}: ${what} at ${data.store_id}`;
    list.prepend(li);
    while (list.children.length > 200) list.lastChild.remove();
  };
  source.onopen = () => { $("#feed-state").textContent = "live"; };
  source.onerror = () => { $("#feed-state").textContent = "reconnecting…"; };
  source.addEventListener("decision", (e) => add("decision", JSON.parse(e.data)));
  source.addEventListener("redemption", (e) => add("redemption", JSON.parse(e.data)));
}

async function loadAudit() {
  const params = query($("#audit-filter"));
  params.set("limit", PAGE); params.set("offset", state.offsets.audit);
  const body = await api(`/v1/manager/audit?${params}`);
  state.totals.audit = body.page.total;
  const rows = $("#audit-rows"); rows.replaceChildren();
  for (const a of body.items) {
    const tr = document.createElement("tr");
    cell(tr, a.at.slice(0, 19).replace("T", " ")); cell(tr, a.actor); cell(tr, a.action); cell(tr, a.target || "");
    const changes = a.details.changes;
    cell(tr, changes
      ? Object.entries(changes).map(([k, v]) => `${k}: ${JSON.stringify(v.from)} → ${JSON.stringify(v.to)}`).join("; ")
      : Object.entries(a.details).map(([k, v]) => `${k}: ${JSON.stringify(v)}`).join("; "));
    rows.append(tr);
  }
  pager("audit", loadAudit);
}

async function act(fn, done) {
  showError(null);
  try { await fn(); if (done) status(done); } catch (err) { showError(err); }
}

function bind() {
  $("#store-form").onsubmit = addStore;
  $("#import-form").onsubmit = importStores;
  $("#store-filter").onsubmit = (e) => { e.preventDefault(); state.offsets.stores = 0; act(loadStores); };
  $("#campaign-filter").onsubmit = (e) => { e.preventDefault(); state.offsets.campaigns = 0; act(loadCampaigns); };
  $("#audit-filter").onsubmit = (e) => { e.preventDefault(); state.offsets.audit = 0; act(loadAudit); };
  $("#analytics-form").onsubmit = (e) => { e.preventDefault(); act(loadFunnel); };
  $("#new-campaign").onclick = () => openEditor(null);
  $("#add-variant").onclick = () => variantFields({ name: String.fromCharCode(65 + document.querySelectorAll("#variants .variant").length) });
  $("#cancel-edit").onclick = () => { $("#campaign-form").hidden = true; };
  $("#campaign-form").onsubmit = saveCampaign;
  window.addEventListener("hashchange", () => { if (location.hash === "#audit") act(loadAudit); });
}

bind();
act(async () => {
  await setupMap();
  await loadStores();
  await loadCampaigns();
  await loadAudit();
  startFeed();
  status("ready");
});
