// H4a: progressive enhancement of "Ajouter un document". A file over the size limit is
// refused here, before it is sent: a body over the HTTP listener's limit would be refused
// by the server before the webmail could say why. Without script the server still refuses
// (and says why for any file it receives).
"use strict";
document.querySelectorAll("form[data-max-bytes]").forEach((form) => {
  const limit = Number(form.dataset.maxBytes);
  const message = document.getElementById(form.dataset.sizeError);
  const input = form.querySelector("input[type=file]");
  if (!limit || !message || !input) {
    return;
  }
  const tooLarge = () => Array.from(input.files || []).some((file) => file.size > limit);
  const show = (refused) => {
    message.hidden = !refused;
    const described = (input.getAttribute("aria-describedby") || "").split(" ").filter(
      (id) => id && id !== message.id,
    );
    if (refused) {
      described.push(message.id);
    }
    input.setAttribute("aria-describedby", described.join(" "));
    input.setAttribute("aria-invalid", refused ? "true" : "false");
  };
  input.addEventListener("change", () => show(tooLarge()));
  form.addEventListener("submit", (event) => {
    if (tooLarge()) {
      event.preventDefault();
      show(true);
      input.focus();
    }
  });
});
