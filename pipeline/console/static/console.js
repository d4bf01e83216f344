// The live alert list: rows arrive over server-sent events, already rendered (and escaped) by the server.
(() => {
  const rows = document.getElementById("alerts");
  const live = document.getElementById("live");
  if (!rows || !rows.dataset.feed || !window.EventSource) return;
  const max = Number(rows.dataset.max) || 200;
  const show = (text, state) => { live.hidden = false; live.textContent = text; live.className = "live " + state; };
  const source = new EventSource(rows.dataset.feed);
  source.addEventListener("open", () => show("live", "on"));
  source.addEventListener("error", () => show("reconnecting…", "off"));
  source.addEventListener("alert", (event) => {
    const template = document.createElement("template");
    template.innerHTML = event.data.trim();
    const row = template.content.firstElementChild;
    if (!row || document.getElementById(row.id)) return;
    row.classList.add("new");
    rows.prepend(row);
    document.getElementById("empty")?.remove();
    while (rows.rows.length > max) rows.deleteRow(-1);
  });
})();
