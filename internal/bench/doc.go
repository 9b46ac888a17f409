// Package bench is `c2cvia bench`, the relay's load and crash harness: a
// program of its own inside the binary that drives a relay from outside,
// over HTTP, as its users do, and reads the figures it needs from the
// relay's /metrics. Package main hands it serve's own start-up path
// (Relays), which this package cannot import; NewCommand is the command.
package bench
