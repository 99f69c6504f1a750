package node

import (
	"embed"
	"io/fs"
	"net/http"
)

// The status page (docs/API.md "Status page"): static files embedded in
// the binary, which read the daemon's own API; nothing is fetched from
// elsewhere.
//
//go:embed ui
var uiFiles embed.FS

// uiHandlers serves the page at / and its assets under /ui/.
func uiHandlers(mux *http.ServeMux) {
	sub, err := fs.Sub(uiFiles, "ui")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", "default-src 'self'; style-src 'self'; script-src 'self'; connect-src 'self'")
		http.ServeFileFS(w, r, sub, "index.html")
	})
	mux.Handle("GET /ui/", http.StripPrefix("/ui/", http.FileServerFS(sub)))
}
