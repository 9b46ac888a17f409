// How serve faces the network: plain HTTP, HTTPS from certificate files or
// from an ACME CA (Let's Encrypt) through autocert, and the server limits
// that keep slow or hostile clients from holding connections.

package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/crypto/acme"
	"golang.org/x/crypto/acme/autocert"
)

// frontend is serve's listeners and their http.Servers.
type frontend struct {
	log     *slog.Logger
	cfg     listenConfig
	tls     *tls.Config       // nil: plain HTTP
	acme    *autocert.Manager // nil without --acme-domain
	domains []string          // --acme-domain, checked and in lower case

	main, challenge     *http.Server // challenge: ACME HTTP-01 and redirects
	mainLn, challengeLn net.Listener
	conns               *connCaps // the caps on the connections of both listeners
}

// newFrontend loads or prepares the certificates of checked listen
// settings (listenConfig.check). It does not listen yet, and writes nothing
// but the ACME cache folder.
func newFrontend(log *slog.Logger, c listenConfig, dbPath string) (*frontend, error) {
	f := &frontend{log: log, cfg: c}
	switch {
	case c.TLSCert != "":
		cert, err := tls.LoadX509KeyPair(c.TLSCert, c.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("--tls-cert %s, --tls-key %s: %w", c.TLSCert, c.TLSKey, err)
		}
		f.tls = &tls.Config{Certificates: []tls.Certificate{cert}}
	case len(c.ACMEDomains) > 0:
		domains, err := acmeDomains(c.ACMEDomains)
		if err != nil {
			return nil, err
		}
		m, err := newACMEManager(c, domains, dbPath)
		if err != nil {
			return nil, err
		}
		f.acme, f.tls, f.domains = m, m.TLSConfig(), domains
	}
	return f, nil
}

// newACMEManager gets certificates for --acme-domain and nothing else. The
// cache folder holds the account key and the certificates' private keys, so
// it is made 0700, and an existing one others can read is refused.
func newACMEManager(c listenConfig, domains []string, dbPath string) (*autocert.Manager, error) {
	dir := c.ACMECache
	if dir == "" {
		dir = filepath.Join(filepath.Dir(dbPath), "acme")
	}
	if err := privateDir(dir); err != nil {
		return nil, fmt.Errorf("ACME cache: %w", err)
	}
	return &autocert.Manager{
		Prompt:     autocert.AcceptTOS, // documented: --acme-domain accepts the CA's terms
		Cache:      autocert.DirCache(dir),
		HostPolicy: autocert.HostWhitelist(domains...),
		Email:      c.ACMEEmail,
		Client:     &acme.Client{DirectoryURL: c.ACMEDirectory, UserAgent: "c2cvia"},
	}, nil
}

// privateDir makes dir with mode 0700, or checks that an existing one is
// closed to group and others.
func privateDir(dir string) error {
	fi, err := os.Stat(dir)
	if errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		return os.Chmod(dir, 0o700) // whatever the umask
	}
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a folder", dir)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("%s is open to others (mode %04o) and will hold private keys: chmod 700 it", dir, fi.Mode().Perm())
	}
	return nil
}

// listen binds addr, and --acme-http-addr in ACME mode. A busy port fails
// here, before anything is opened or served.
func (f *frontend) listen(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return listenError("addr", addr, err)
	}
	total := f.cfg.MaxConns
	if total == 0 {
		total = defaultMaxConns()
	}
	f.conns = newConnCaps(total, f.cfg.MaxConnsPerIP, f.cfg.MaxConnsPer48, f.cfg.trusted)
	f.mainLn = f.conns.listen(ln)
	if f.acme == nil || f.cfg.ACMEHTTPAddr == "" {
		return nil
	}
	cln, err := net.Listen("tcp", f.cfg.ACMEHTTPAddr)
	if err != nil {
		ln.Close()
		return listenError("acme-http-addr", f.cfg.ACMEHTTPAddr, err)
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	f.challengeLn, f.challenge = f.conns.listen(cln), f.httpServer(f.acme.HTTPHandler(redirectToHTTPS(f.domains, port)))
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
		ErrorLog:          httpErrorLog(f.log),
	}
}

// url is the main listener's base URL, one a browser opens: bound to
// every interface (:8080, 0.0.0.0, [::]), it names localhost.
func (f *frontend) url() string {
	scheme := "http://"
	if f.tls != nil {
		scheme = "https://"
	}
	addr := f.mainLn.Addr().String()
	if host, port, err := net.SplitHostPort(addr); err == nil {
		if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
			addr = net.JoinHostPort("localhost", port)
		}
	}
	return scheme + addr
}

// everyInterface reports whether the main listener is bound to every
// interface, for the listening line.
func (f *frontend) everyInterface() bool {
	host, _, err := net.SplitHostPort(f.mainLn.Addr().String())
	ip := net.ParseIP(host)
	return err == nil && ip != nil && ip.IsUnspecified()
}

// listenError says what to do about a port that cannot be bound.
func listenError(flag, addr string, err error) error {
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		return fmt.Errorf("--%s %s: the address is in use by another program (another relay?): stop it or give another --%s", flag, addr, flag)
	case errors.Is(err, syscall.EACCES):
		return fmt.Errorf("--%s %s: not allowed to listen there (ports below 1024 need CAP_NET_BIND_SERVICE, as the systemd unit gives): %w", flag, addr, err)
	}
	return fmt.Errorf("--%s %s: %w", flag, addr, err)
}

// mode names how the main listener serves, for the log.
func (f *frontend) mode() string {
	switch {
	case f.acme != nil:
		return "acme"
	case f.tls != nil:
		return "tls"
	}
	return "http"
}

// serve runs h on the bound listeners; the channel gets the first one's
// failure.
func (f *frontend) serve(h http.Handler) <-chan error {
	f.main = f.httpServer(withWriteTimeout(f.cfg.WriteTimeout, withFramingGuard(withReadBodyTimeout(f.cfg.ReadBodyTimeout, h))))
	f.main.TLSConfig = f.tls
	errc := make(chan error, 2)
	go func() {
		if f.tls != nil {
			errc <- f.main.ServeTLS(f.mainLn, "", "") // the certificate is in TLSConfig
		} else {
			errc <- f.main.Serve(f.mainLn)
		}
	}()
	if f.challenge != nil {
		go func() { errc <- fmt.Errorf("--acme-http-addr: %w", f.challenge.Serve(f.challengeLn)) }()
	}
	return errc
}

// shutdown stops accepting and waits for the calls in flight, until ctx ends.
func (f *frontend) shutdown(ctx context.Context) error {
	var errs []error
	if f.challenge != nil {
		errs = append(errs, f.challenge.Shutdown(ctx))
	}
	return errors.Join(append(errs, f.main.Shutdown(ctx))...)
}

// close closes the listeners, for a serve that ends before shutdown.
func (f *frontend) close() {
	for _, ln := range []net.Listener{f.mainLn, f.challengeLn} {
		if ln != nil {
			ln.Close()
		}
	}
}

// redirectToHTTPS answers every request on the HTTP port with a 308 to the
// same path and query over HTTPS (308 keeps the method and body). The target
// host is the request's if it is one of domains, else the first of them, so
// a forged Host header cannot send anyone elsewhere. httpsPort is left out
// when it is 443.
func redirectToHTTPS(domains []string, httpsPort string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		host = strings.TrimSuffix(strings.ToLower(host), ".")
		if !slices.Contains(domains, host) {
			host = domains[0]
		}
		if httpsPort != "" && httpsPort != "443" {
			host = net.JoinHostPort(host, httpsPort)
		}
		http.Redirect(w, r, "https://"+host+r.URL.RequestURI(), http.StatusPermanentRedirect)
	})
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
