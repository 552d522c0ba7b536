// provisiond console: small enhancements only; every page works without this file.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  // Times are written in UTC (RFC 3339); shown in the browser's zone.
  for (const t of document.querySelectorAll("time[datetime]")) {
    const d = new Date(t.getAttribute("datetime"));
    if (!isNaN(d)) t.textContent = d.toLocaleString();
  }
  // A CSV file chosen for a rollout is read into the entries list.
  for (const input of document.querySelectorAll("input[type=file][data-fills]")) {
    input.addEventListener("change", () => {
      const file = input.files && input.files[0];
      const target = document.getElementById(input.dataset.fills);
      if (!file || !target) return;
      file.text().then((text) => { target.value = text; });
    });
  }
  // Destructive buttons ask first (the server asks again on a page of its own without JS).
  for (const b of document.querySelectorAll("button.danger:not(#confirm)")) {
    b.addEventListener("click", (e) => {
      if (!window.confirm(b.textContent.trim() + "?")) { e.preventDefault(); return; }
      const yes = document.createElement("input");
      yes.type = "hidden"; yes.name = "confirm"; yes.value = "yes";
      b.form.appendChild(yes);
    });
  }
});
