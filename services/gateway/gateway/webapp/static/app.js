// Progressive enhancement of the server-rendered pages: every page works without it.
// - The dashboard's figures follow the live figures' Server-Sent Events (scoped by the
//   API to the user's subtree) and change without a reload.
// - A region marked data-refresh="<seconds>" (a running import, sending campaigns) is
//   fetched again from the same page every so often and swapped in place, until the
//   server renders it without the mark (the import ended, no campaign is moving).
// - The import form shows the upload's progress.

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

function follow(region) {
  const seconds = Number(region.dataset.refresh);
  if (!region.id || !(seconds > 0)) return;
  setTimeout(async () => {
    let html;
    try {
      const answer = await fetch(window.location.href, {
        headers: { Accept: "text/html" },
        credentials: "same-origin",
        redirect: "error",
      });
      if (!answer.ok) return; // signed out, refused: the refresh link is still there
      html = await answer.text();
    } catch {
      return;
    }
    const fresh = new DOMParser().parseFromString(html, "text/html").getElementById(region.id);
    if (!fresh) return;
    const current = document.getElementById(region.id);
    if (!current) return;
    // keep the keyboard where it was when the focused element is still there
    const focused = document.activeElement && document.activeElement.id;
    current.replaceWith(fresh);
    if (focused) document.getElementById(focused)?.focus();
    follow(fresh);
  }, seconds * 1000);
}

for (const region of document.querySelectorAll("[data-refresh]")) follow(region);

const upload = document.querySelector("form[data-upload]");

if (upload && "FormData" in window) {
  upload.addEventListener("submit", (event) => {
    event.preventDefault();
    const bar = upload.querySelector(".upload-progress");
    const button = upload.querySelector("button[type=submit]");
    const request = new XMLHttpRequest();
    request.open("POST", upload.action);
    request.upload.addEventListener("progress", (progress) => {
      if (bar && progress.lengthComputable) {
        bar.hidden = false;
        bar.max = progress.total;
        bar.value = progress.loaded;
      }
    });
    request.addEventListener("load", () => {
      // accepted: the server sent the job's page (after its redirect); refused: the form
      // again with the reasons, shown as the page it is
      if (request.responseURL && new URL(request.responseURL).pathname !== new URL(upload.action).pathname) {
        window.location.assign(request.responseURL);
        return;
      }
      const page = new DOMParser().parseFromString(request.responseText, "text/html");
      const main = page.querySelector("main");
      if (main) {
        document.querySelector("main").replaceWith(main);
        document.querySelector("[role=alert]")?.focus();
      } else {
        window.location.reload();
      }
    });
    request.addEventListener("error", () => upload.submit());
    if (button) button.disabled = true;
    request.send(new FormData(upload));
  });
}
