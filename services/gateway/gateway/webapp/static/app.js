// Progressive enhancement of the server-rendered pages: every page works without it.
// The dashboard's figures follow the live figures' Server-Sent Events (scoped by the API
// to the user's subtree) and change without a reload.

const section = document.querySelector("[data-stream]");

if (section && "EventSource" in window) {
  const locale = document.documentElement.lang === "fr" ? "fr-FR" : "en-GB";
  // the same writing as the server's first render (gateway.webapp.i18n)
  const integers = new Intl.NumberFormat(locale);
  const amounts = new Intl.NumberFormat(locale, { style: "currency", currency: "EUR" });
  const status = section.querySelector("[data-live-status]");
  const source = new EventSource(section.dataset.stream);

  source.addEventListener("figures", (event) => {
    let figures;
    try {
      figures = JSON.parse(event.data);
    } catch {
      return;
    }
    for (const element of section.querySelectorAll("[data-figure]")) {
      const value = figures[element.dataset.figure];
      if (typeof value !== "number") continue;
      const text =
        element.dataset.format === "cents" ? amounts.format(value / 100) : integers.format(value);
      if (element.textContent !== text) element.textContent = text;
    }
    section.dataset.version = String(figures.version ?? "");
  });

  source.addEventListener("error", () => {
    // a stream the server ended is reopened by the browser itself; a refused one is not
    if (source.readyState === EventSource.CLOSED && status) {
      status.textContent = status.dataset.paused;
    }
  });
}
