// Swagger UI's start for /docs (tower/web/docs.py), a file rather than an inline script so
// the page's Content-Security-Policy can refuse every inline one. The OpenAPI document's
// URL comes from the page (it knows the tower's root path). The key given to "Authorize"
// lives only in this page's memory: persistAuthorization would keep it in localStorage,
// where any script ever run on this origin could read it.
'use strict';

const root = document.getElementById('swagger-ui');

window.ui = SwaggerUIBundle({
  url: root.dataset.openapiUrl,
  domNode: root,
  deepLinking: true,
  persistAuthorization: false,
  // null: no badge fetched from validator.swagger.io (the page talks to this tower only).
  validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis],
  layout: 'BaseLayout',
});
