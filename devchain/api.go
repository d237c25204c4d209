package devchain

import (
	"context"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
)

// devAPI serves the dev_ namespace.
type devAPI struct{ chain *Chain }

// MinedBlock is what dev_mine returns.
type MinedBlock struct {
	Number hexutil.Uint64 `json:"number"`
	Hash   common.Hash    `json:"hash"`
}

// DevAccountJSON is one entry of dev_accounts. PrivateKey is the dev
// account's key in hex: public knowledge, dev chains only.
type DevAccountJSON struct {
	Index      int            `json:"index"`
	Address    common.Address `json:"address"`
	PrivateKey string         `json:"privateKey"`
}

// Mine is dev_mine: seal a block now.
func (api *devAPI) Mine(ctx context.Context) (MinedBlock, error) {
	h, err := api.chain.Mine(ctx)
	if err != nil {
		return MinedBlock{}, err
	}
	return MinedBlock{Number: hexutil.Uint64(h.Number.Uint64()), Hash: h.Hash()}, nil
}

// Accounts is dev_accounts: the prefunded accounts with their private keys.
func (api *devAPI) Accounts() []DevAccountJSON {
	out := make([]DevAccountJSON, 0, len(api.chain.accounts))
	for _, a := range api.chain.accounts {
		out = append(out, DevAccountJSON{Index: a.Index, Address: a.Address, PrivateKey: a.KeyHex()})
	}
	return out
}

// evmAPI serves evm_mine as Hardhat and Anvil do.
type evmAPI struct{ chain *Chain }

// Mine is evm_mine: seal a block now; the result is "0x0" as in Hardhat.
func (api *evmAPI) Mine(ctx context.Context) (string, error) {
	if _, err := api.chain.Mine(ctx); err != nil {
		return "", err
	}
	return "0x0", nil
}
