// Command gen writes the test-only Paillier pre-parameter fixtures that the
// tests of the threshold engine and the network load instead of waiting for
// safe primes.
//
//	go run ./internal/testfixtures/gen -n 11
//
// The files hold Paillier secret keys. They are test-only key material: never
// load them in a node.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"sync"

	"github.com/bnb-chain/tss-lib/v2/ecdsa/keygen"

	"github.com/custos-wallet/custos/internal/testfixtures"
)

func main() {
	n := flag.Int("n", 7, "number of parties to generate pre-parameters for")
	dir := flag.String("dir", "internal/testfixtures/preparams", "output directory")
	workers := flag.Int("workers", 2, "sets generated at once")
	from := flag.Int("from", 0, "first fixture number to write (keeps the ones below it)")
	flag.Parse()
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		log.Fatal(err)
	}
	jobs := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < *workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				pp, err := keygen.GeneratePreParamsWithContext(context.Background(), 1)
				if err != nil {
					log.Fatalf("party %d: %v", i, err)
				}
				f := testfixtures.File{Warning: testfixtures.Warning, PreParams: *pp}
				b, err := json.MarshalIndent(f, "", " ")
				if err != nil {
					log.Fatal(err)
				}
				path := filepath.Join(*dir, fmt.Sprintf("%02d.json", i))
				if err := os.WriteFile(path, b, 0o644); err != nil {
					log.Fatal(err)
				}
				log.Printf("wrote %s", path)
			}
		}()
	}
	for i := *from; i < *n; i++ {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
}
