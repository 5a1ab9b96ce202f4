// Starts Swagger UI (loaded from this server by /docs) on this server's OpenAPI document.
window.addEventListener("load", () => {
  window.ui = SwaggerUIBundle({ url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true });
});
