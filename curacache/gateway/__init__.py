"""OpenAI-compatible HTTP gateway sidecar (`curacache gateway`), built on the SDK only:
`app` (handlers), `wire` (OpenAI shapes, what is cacheable), `errors` (the HTTP error map),
`config`, `metrics`."""
