// The API docs (GET /docs): Swagger UI from the package (static/vendor/swagger-ui), over this
// daemon's /openapi.json. Nothing is fetched from any other host.
"use strict";

window.addEventListener("DOMContentLoaded", () => {
  window.SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [window.SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    validatorUrl: null,
  });
});
