// c2cvia is a relay that lets plain HTTP clients talk to each other: in a
// named net, one participant plays the HTTP server (the SimServer), the
// others (SimClients) send it requests, and every request and response is
// committed to SQLite before it is acknowledged.
//
// main.go holds the command line: serve, inspect, purge, bench and version.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/c2cvia/c2cvia/internal/bench"
	"github.com/spf13/cobra"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "c2cvia:", err)
		os.Exit(1)
	}
}

// run is the whole program; tests call it in-process. Every flag not given
// on the command line is read from its C2CVIA_* variable through getenv.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	root := &cobra.Command{
		Use:               "c2cvia",
		Short:             "A durable relay that lets HTTP clients serve each other",
		Version:           buildVersion().String(),
		SilenceUsage:      true,
		SilenceErrors:     true,
		PersistentPreRunE: applyEnv(getenv),
	}
	root.SetFlagErrorFunc(flagError)
	root.SetVersionTemplate("{{.Version}}\n")
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	benchCmd := bench.NewCommand(benchRelays(), stdout, stderr)
	documentEnv(benchCmd.Flags())
	root.AddCommand(newServeCmd(stdout, stderr), newInspectCmd(stdout), newPurgeCmd(stdout), newNetCmd(os.Stdin, stdout), newBackupCmd(stdout),
		benchCmd, newVersionCmd(stdout))
	for _, cmd := range root.Commands() {
		if cmd.Annotations[checksSettings] != "" {
			deferErrors(cmd.Flags()) // bad values are reported with the rest, by the command's check
		}
	}
	return root.ExecuteContext(ctx)
}

func newServeCmd(stdout, stderr io.Writer) *cobra.Command {
	var cfg config
	cmd := checkSettings(&cobra.Command{
		Use:   "serve",
		Short: "Run the relay",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := cfg.checkWith(newSettingErrors(cmd)); err != nil {
				return err
			}
			return serve(cmd.Context(), cfg, stdout, stderr)
		},
	})
	fs := cmd.Flags()
	addServeFlags(fs, &cfg)
	fs.Lookup("db").Usage += " (created if missing)"
	documentEnv(fs)
	return cmd
}

// noArgs refuses arguments, saying how a bool flag takes its value: with
// "=", since "--metrics false" reads as --metrics and an argument "false".
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return fmt.Errorf("%s takes no arguments, not %q; a true/false flag takes its value with =, as in --metrics=false",
			cmd.Name(), args)
	}
	return nil
}

func newVersionCmd(stdout io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version, the VCS revision and the Go version of this build",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			_, err := fmt.Fprintln(stdout, buildVersion())
			return err
		},
	}
}
