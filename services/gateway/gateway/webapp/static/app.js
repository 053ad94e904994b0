// Progressive enhancement of the server-rendered pages: every page works without it.
// - The dashboard's figures follow the live figures' Server-Sent Events (scoped by the
//   API to the user's subtree) and change without a reload.
// - A region marked data-refresh="<seconds>" (a running import, sending campaigns) is
//   fetched again from the same page every so often and swapped in place, until the
//   server renders it without the mark (the import ended, no campaign is moving).
// - The dashboard's other sections are fetched again when a live event of the user's
//   subtree changes them (the gateway's event stream).
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

// Fetch the page again and swap the regions with these ids in place: the fresh ones.
async function refresh(ids) {
  let html;
  try {
    const answer = await fetch(window.location.href, {
      headers: { Accept: "text/html" },
      credentials: "same-origin",
      redirect: "error",
    });
    if (!answer.ok) return []; // signed out, refused: the refresh link is still there
    html = await answer.text();
  } catch {
    return [];
  }
  const page = new DOMParser().parseFromString(html, "text/html");
  // keep the keyboard where it was when the focused element is still there
  const focused = document.activeElement && document.activeElement.id;
  const swapped = [];
  for (const id of ids) {
    const fresh = page.getElementById(id);
    const current = document.getElementById(id);
    if (!fresh || !current) continue;
    current.replaceWith(fresh);
    swapped.push(fresh);
  }
  if (focused) document.getElementById(focused)?.focus();
  return swapped;
}

function follow(region) {
  const seconds = Number(region.dataset.refresh);
  if (!region.id || !(seconds > 0)) return;
  setTimeout(async () => {
    for (const fresh of await refresh([region.id])) follow(fresh);
  }, seconds * 1000);
}

for (const region of document.querySelectorAll("[data-refresh]")) follow(region);

// The dashboard's other sections follow the live events of the user's subtree: an event
// marks the sections that list its type (data-follow-events), and they are fetched again
// at most every two seconds (an import's burst of events is one refresh, not thousands).
const events = document.querySelector("[data-events]");

if (events && "EventSource" in window) {
  const stale = new Set();
  let timer = null;
  const source = new EventSource(events.dataset.events);
  const types = new Set();
  for (const region of document.querySelectorAll("[data-follow-events]")) {
    for (const type of region.dataset.followEvents.split(" ")) if (type) types.add(type);
  }
  for (const type of types) {
    source.addEventListener(type, () => {
      for (const region of document.querySelectorAll("[data-follow-events]")) {
        if (region.id && region.dataset.followEvents.split(" ").includes(type)) stale.add(region.id);
      }
      if (timer === null) {
        timer = setTimeout(async () => {
          const ids = [...stale];
          stale.clear();
          timer = null;
          await refresh(ids);
        }, 2000);
      }
    });
  }
  // a reset (missed events no longer kept): everything may have changed
  source.addEventListener("reset", () => {
    refresh([...document.querySelectorAll("[data-follow-events]")].map((r) => r.id));
  });
}

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
