// `c2cvia backup`: a consistent copy of a store, taken while the relay
// serves it, that a relay can be started on as it is.

package main

import (
	"database/sql"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/spf13/cobra"
)

func newBackupCmd(stdout io.Writer) *cobra.Command {
	var db string
	cmd := &cobra.Command{
		Use:   "backup DEST",
		Short: "Copy the store to DEST (a new file, mode 0600), also while the relay serves it",
		Long: `Writes a consistent copy of the store, as of one moment, to DEST with
SQLite's VACUUM INTO: compacted, without a WAL, ready for a relay to start on.
It reads without blocking the relay (its writes go on meanwhile) and needs
no write access to the store. DEST must not exist. A PostgreSQL store
(--db postgres://…) is backed up with pg_dump, not with this command.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dest := args[0]
			if err := checkDB(db); err != nil {
				return err
			}
			if isPostgresURL(db) {
				return fmt.Errorf("backup copies a SQLite store; %s is a PostgreSQL database: back it up with PostgreSQL's tools, "+
					"e.g. pg_dump --format=custom --schema=SCHEMA --file=%s 'URL' (pg_restore puts it back), or the server's own backups", storeName(db), dest)
			}
			if _, err := os.Stat(dest); !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("%s exists: backup writes a new file only", dest)
			}
			if _, _, err := probeStore(cmd.Context(), db, true); err != nil {
				return err
			}
			if err := createStoreFile(dest); err != nil { // 0600: it holds what the store holds
				return err
			}
			src, err := sql.Open("sqlite", "file:"+db+"?mode=ro&_pragma=busy_timeout(5000)")
			if err != nil {
				return err
			}
			defer src.Close()
			if _, err := src.ExecContext(cmd.Context(), `VACUUM INTO ?`, dest); err != nil {
				os.Remove(dest)
				return fmt.Errorf("back up %s to %s: %w", db, dest, err)
			}
			fi, err := os.Stat(dest)
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "backed up %s to %s (%d bytes)\n", db, dest, fi.Size())
			return nil
		},
	}
	cmd.Flags().StringVar(&db, "db", "c2cvia.db", "SQLite file of the store (must exist; for a postgres:// store use pg_dump)")
	documentEnv(cmd.Flags())
	return cmd
}
