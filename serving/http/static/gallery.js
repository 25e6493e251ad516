// The gallery's only script: copy a <lora:...> tag with its button, "/" to jump to the search box, and unset
// filters left out of the search URL.
"use strict";

function copyByHand(text) {
  // No clipboard API (an insecure origin): select the text in a hidden field and ask the browser to copy it.
  const field = document.createElement("textarea");
  field.value = text;
  field.setAttribute("readonly", "");
  field.style.position = "fixed";
  field.style.opacity = "0";
  document.body.appendChild(field);
  field.select();
  let copied = false;
  try { copied = document.execCommand("copy"); } catch (error) { copied = false; }
  field.remove();
  return copied;
}

async function copyTag(button) {
  const text = button.dataset.copy;
  let copied = false;
  try {
    await navigator.clipboard.writeText(text);
    copied = true;
  } catch (error) {
    copied = copyByHand(text);
  }
  const label = button.querySelector(".copy-label");
  const status = document.getElementById("copy-status");
  label.textContent = copied ? "Copied" : "Copy failed: select the tag";
  button.classList.toggle("copied", copied);
  if (status) status.textContent = copied ? `Copied ${text}` : "Copying failed";
  window.setTimeout(() => { label.textContent = "Copy"; button.classList.remove("copied"); }, 2000);
}

document.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-copy]");
  if (button) copyTag(button);
});

document.addEventListener("keydown", (event) => {
  const typing = event.target.closest("input, textarea, select, [contenteditable]");
  const search = document.getElementById("q");
  if (event.key === "/" && !typing && search && !event.ctrlKey && !event.metaKey && !event.altKey) {
    event.preventDefault();
    search.focus();
    search.select();
  }
});

document.addEventListener("submit", (event) => {
  // Leave unset filters out of the URL, so a shared link holds only what was chosen.
  for (const field of event.target.querySelectorAll("select, input")) {
    if (field.name && field.value === "") field.disabled = true;
  }
});

window.addEventListener("pageshow", () => {
  // Back from the next page: fields disabled on submit are usable again.
  for (const field of document.querySelectorAll("form.search [disabled]")) field.disabled = false;
});
