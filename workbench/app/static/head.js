// Runs in the page's <head> (Gradio adds it once the page's config has loaded): picks the page's language
// (?lang=en|zh-CN in the URL, else the browser's) and tells the server in a cookie (its messages follow it too).
(function () {
  var params = new URLSearchParams(window.location.search);
  // Gradio has already chosen its labels' language from the browser's (this script runs after it starts).
  window.wbBrowserLanguage = /^zh/i.test(window.navigator.language || "") ? "zh-CN" : "en";
  var asked = params.get("lang") || window.navigator.language || "en";
  var lang = /^zh/i.test(asked) ? "zh-CN" : "en";
  try {
    Object.defineProperty(window.navigator, "language", { get: function () { return lang; } });
    Object.defineProperty(window.navigator, "languages", { get: function () { return [lang]; } });
  } catch (e) { /* a browser that refuses keeps its own language for Gradio's labels */ }
  document.cookie = "wb_lang=" + lang + "; path=/; SameSite=Lax";
  document.documentElement.lang = lang;
  window.wbLanguage = lang;
  if (params.get("present") === "1") document.documentElement.classList.add("wb-present");
})();
