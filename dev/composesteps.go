package dev

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/custos-wallet/custos/api"
	"github.com/ethereum/go-ethereum/ethclient"
)

// ComposeStepsOptions say how the operator's machine reaches the compose
// cluster: the printed steps run there, not in a container.
type ComposeStepsOptions struct {
	// Program is the custos binary on the host (default ./custos, as the
	// README builds it).
	Program string
	// URL is the coordinator's REST API as the host reaches it (default
	// http://127.0.0.1:8080, the published port).
	URL string
	// Credential is the agent credential compose init left for the
	// operator (default .custos-compose/agent.json).
	Credential string
	// Guardian runs custos in guardian-1's container (default
	// docker-compose exec guardian-1 /custos); the container's environment
	// names its admin socket, keystore and password file.
	Guardian string
}

// The defaults of ComposeStepsOptions.
const (
	ComposeHostProgram    = "./custos"
	ComposeHostURL        = "http://127.0.0.1:8080"
	ComposeHostCredential = ".custos-compose/agent.json"
	ComposeGuardian1Exec  = "docker-compose exec guardian-1 /custos"
)

// ComposeSteps are the steps of a first payment on the compose cluster,
// as the operator runs them from the host: a hot payment, then a guarded
// one from the vault key that guardian-1 approves in its container. The
// payments are built at each key's next nonce now: print them afresh
// (compose setup again) once they have run.
func ComposeSteps(ctx context.Context, chainRPC string, keys *ComposeKeys, o ComposeStepsOptions) ([]Step, error) {
	o.Program = firstOr(o.Program, ComposeHostProgram)
	o.URL = strings.TrimSuffix(firstOr(o.URL, ComposeHostURL), "/")
	o.Credential = firstOr(o.Credential, ComposeHostCredential)
	o.Guardian = firstOr(o.Guardian, ComposeGuardian1Exec)
	eth, err := ethclient.DialContext(ctx, chainRPC)
	if err != nil {
		return nil, fmt.Errorf("dev chain: %w", err)
	}
	defer eth.Close()
	chainID, err := eth.ChainID(ctx)
	if err != nil {
		return nil, fmt.Errorf("dev chain: %w", err)
	}
	hotTx, err := paymentTx(ctx, eth, chainID, keys.Hot.Address, Vendors[0], HotPayment)
	if err != nil {
		return nil, err
	}
	vaultTx, err := paymentTx(ctx, eth, chainID, keys.Vault.Address, Vendors[1], GuardedPayment)
	if err != nil {
		return nil, err
	}
	sign := func(k api.Key, tx string, extra ...string) []string {
		args := append(strings.Fields(o.Program), "sign", "--url", o.URL, "--credential", o.Credential,
			"--key", k.ID.String(), "--chain-id", chainID.String(), "--tx", tx)
		return append(args, extra...)
	}
	guardian := func(args ...string) []string {
		return append(append(strings.Fields(o.Guardian), "guardian"), args...)
	}
	idem := fmt.Sprintf("compose-guarded-%d", time.Now().Unix())
	return []Step{
		{Say: fmt.Sprintf("Pay vendor %s %s ETH from the hot key, as the agent: tier hot, the agent and policy nodes sign with no human, and the transaction is mined:", Vendors[0].Hex(), formatEther(HotPayment)),
			Args: sign(keys.Hot, hotTx, "--broadcast")},
		{Say: fmt.Sprintf("Ask to pay vendor %s %s ETH from the vault key: tier guarded, so it waits for one guardian (it prints the request id):", Vendors[1].Hex(), formatEther(GuardedPayment)),
			Args: sign(keys.Vault, vaultTx, "--idempotency-key", idem, "--wait=false")},
		{Say: "guardian-1's queue, in its container, with the request decoded by its own node (note the request id):",
			Args: guardian("pending")},
		{Say: fmt.Sprintf("Approve it as guardian-1 (an EIP-712 signature by the keystore in its volume; it asks first), with the id in place of %s:", RequestIDPlaceholder),
			Args: guardian("approve", RequestIDPlaceholder)},
		{Say: "Collect the signature and broadcast (the same idempotency key returns the same request):",
			Args: sign(keys.Vault, vaultTx, "--idempotency-key", idem, "--broadcast")},
	}, nil
}

func firstOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
