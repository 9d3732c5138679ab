package approval

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/snowgate/snowgate/internal/approval/approvaltest"
)

// cluster is one throwaway PostgreSQL cluster shared by the package's
// tests; TestMain stops it.
var cluster struct {
	once sync.Once
	c    *approvaltest.Cluster
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if cluster.c != nil {
		cluster.c.Stop()
	}
	os.Exit(code)
}

// postgresDSN returns the DSN of a fresh database in the shared cluster,
// starting the cluster on first use. It skips only when the binaries are
// absent.
func postgresDSN(t testing.TB) string {
	t.Helper()
	cluster.once.Do(func() { cluster.c, cluster.err = approvaltest.Start() })
	if errors.Is(cluster.err, approvaltest.ErrNoPostgres) {
		t.Skip(cluster.err.Error())
	}
	if cluster.err != nil {
		t.Fatalf("start PostgreSQL: %v", cluster.err)
	}
	dsn, err := cluster.c.NewDatabase(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return dsn
}

// storeKinds opens each store implementation: SQLite in a temporary file,
// PostgreSQL in a fresh database.
var storeKinds = []struct {
	name string
	open func(t *testing.T) (Store, func() Store)
}{
	{"sqlite", func(t *testing.T) (Store, func() Store) {
		path := filepath.Join(t.TempDir(), "approvals.db")
		open := func() Store {
			s, err := OpenSQLite(context.Background(), path)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		}
		return open(), open
	}},
	{"postgres", func(t *testing.T) (Store, func() Store) {
		dsn := postgresDSN(t)
		open := func() Store {
			s, err := OpenPostgres(context.Background(), dsn)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		}
		return open(), open
	}},
}
