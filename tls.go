// How serve faces the network: plain HTTP or HTTPS from certificate files,
// and the server limits that keep slow or hostile clients from holding
// connections.

package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/spf13/pflag"
)

// listenConfig is how serve listens: TLS and the connection limits.
type listenConfig struct {
	TLSCert           string
	TLSKey            string
	ReadHeaderTimeout time.Duration
	ReadBodyTimeout   time.Duration
	IdleTimeout       time.Duration
	MaxHeaderBytes    int64
}

func addListenFlags(fs *pflag.FlagSet, c *listenConfig) {
	fs.StringVar(&c.TLSCert, "tls-cert", "", "serve HTTPS with this certificate file (PEM, leaf first, then its chain); needs --tls-key")
	fs.StringVar(&c.TLSKey, "tls-key", "", "private key file (PEM) of --tls-cert")
	fs.DurationVar(&c.ReadHeaderTimeout, "read-header-timeout", 10*time.Second, "time a client has for the TLS handshake and its request headers")
	fs.DurationVar(&c.ReadBodyTimeout, "read-body-timeout", 30*time.Second, "time a client has to send a request body (not counting a long poll's wait)")
	fs.DurationVar(&c.IdleTimeout, "idle-timeout", 2*time.Minute, "how long an idle keep-alive connection stays open")
	fs.Var(newByteSize(&c.MaxHeaderBytes, 64<<10), "max-header-bytes", "largest request header (bytes, or with KiB); over it: 431")
}

// frontend is serve's listeners and their http.Servers.
type frontend struct {
	log *slog.Logger
	cfg listenConfig
	tls *tls.Config // nil: plain HTTP

	main   *http.Server
	mainLn net.Listener
}

// newFrontend checks the listen flags and loads the certificate. It does
// not listen yet, and writes nothing.
func newFrontend(log *slog.Logger, c listenConfig, dbPath string) (*frontend, error) {
	if c.ReadHeaderTimeout <= 0 || c.ReadBodyTimeout <= 0 || c.IdleTimeout <= 0 {
		return nil, errors.New("--read-header-timeout, --read-body-timeout and --idle-timeout must be positive")
	}
	f := &frontend{log: log, cfg: c}
	switch {
	case (c.TLSCert == "") != (c.TLSKey == ""):
		return nil, errors.New("--tls-cert and --tls-key go together")
	case c.TLSCert != "":
		cert, err := tls.LoadX509KeyPair(c.TLSCert, c.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("--tls-cert %s, --tls-key %s: %w", c.TLSCert, c.TLSKey, err)
		}
		f.tls = &tls.Config{Certificates: []tls.Certificate{cert}}
	}
	return f, nil
}

// listen binds addr for h. A busy port fails here, before anything is
// served.
func (f *frontend) listen(addr string, h http.Handler) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	f.mainLn, f.main = ln, f.httpServer(withReadBodyTimeout(f.cfg.ReadBodyTimeout, h))
	f.main.TLSConfig = f.tls
	return nil
}

// httpServer is an http.Server with the limits against slow clients.
//
// No WriteTimeout: it runs over the whole response, and a long poll holds
// its response for up to --max-wait. No ReadTimeout either: bodies get their
// own deadline, and their own 408, in withReadBodyTimeout.
func (f *frontend) httpServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: f.cfg.ReadHeaderTimeout, // also bounds the TLS handshake
		IdleTimeout:       f.cfg.IdleTimeout,
		MaxHeaderBytes:    int(f.cfg.MaxHeaderBytes),
		ErrorLog:          slog.NewLogLogger(f.log.Handler(), slog.LevelWarn),
	}
}

// url is the main listener's base URL.
func (f *frontend) url() string {
	if f.tls != nil {
		return "https://" + f.mainLn.Addr().String()
	}
	return "http://" + f.mainLn.Addr().String()
}

// mode names how the main listener serves, for the log.
func (f *frontend) mode() string {
	if f.tls != nil {
		return "tls"
	}
	return "http"
}

// serve runs the listener; the channel gets its failure.
func (f *frontend) serve() <-chan error {
	errc := make(chan error, 1)
	go func() {
		if f.tls != nil {
			errc <- f.main.ServeTLS(f.mainLn, "", "") // the certificate is in TLSConfig
		} else {
			errc <- f.main.Serve(f.mainLn)
		}
	}()
	return errc
}

// shutdown stops accepting and waits for the calls in flight, until ctx ends.
func (f *frontend) shutdown(ctx context.Context) error {
	return f.main.Shutdown(ctx)
}

// close closes the listener, for a serve that ends before shutdown.
func (f *frontend) close() {
	if f.mainLn != nil {
		f.mainLn.Close()
	}
}

// withReadBodyTimeout gives a request with a body d to send it. The
// deadline does not cut a long poll's wait: net/http lifts it once the body
// has ended, when it starts watching the connection for a hang-up (HTTP/1.1),
// and on HTTP/2 it only concerns the body. A request without a body gets no
// deadline: that watch already runs, and a deadline passing under it would
// cancel the request.
func withReadBodyTimeout(d time.Duration, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body != nil && r.Body != http.NoBody {
			// An error means a writer without deadlines: nothing to limit.
			_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(d))
		}
		next.ServeHTTP(w, r)
	})
}
