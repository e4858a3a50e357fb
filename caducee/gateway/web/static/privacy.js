// H2: progressive enhancement of the emergency access switches. "Documents masqués" only
// widens an SAMU or break-glass access, so it is greyed out (and unticked) while both are
// off, as in the national app. Without script the page greys it from the saved state and
// the server forces it off whatever the form says.
"use strict";
document.querySelectorAll("form.emergency-switches").forEach((form) => {
  const samu = form.querySelector("input[name=samu]");
  const breakGlass = form.querySelector("input[name='break-glass']");
  const masked = form.querySelector("input[name=masked]");
  if (!samu || !breakGlass || !masked) {
    return;
  }
  const follow = () => {
    const open = samu.checked || breakGlass.checked;
    masked.disabled = !open;
    if (!open) {
      masked.checked = false;
    }
  };
  samu.addEventListener("change", follow);
  breakGlass.addEventListener("change", follow);
  follow();
});
