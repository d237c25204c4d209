package devchain

import (
	"crypto/ecdsa"
	"fmt"
	"strconv"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/crypto"
)

// DevAccountSeed is the prefix of the string whose Keccak-256 hash is a dev
// account's private key: key i is keccak256(DevAccountSeed + decimal(i)).
const DevAccountSeed = "custos-dev-account-"

// Account is a prefunded dev account. Its key is public knowledge (see
// DevAccount): it exists so that tests, docs and local tools can name and use
// funded accounts.
type Account struct {
	Index   int
	Address common.Address
	Key     *ecdsa.PrivateKey
}

// String names the account without its key, for logs.
func (a Account) String() string {
	return fmt.Sprintf("dev-account-%d %s", a.Index, a.Address.Hex())
}

// KeyHex is the private key as 0x-prefixed hex, as wallets and cast import it.
func (a Account) KeyHex() string {
	return hexutil.Encode(crypto.FromECDSA(a.Key))
}

// DevAccount derives dev account i from a public string, so that its address
// and key are the same on every machine and can be written in docs. Anyone can
// compute it: it is for dev chains only.
func DevAccount(i int) (Account, error) {
	if i < 0 {
		return Account{}, fmt.Errorf("devchain: dev account %d: negative index", i)
	}
	seed := crypto.Keccak256([]byte(DevAccountSeed + strconv.Itoa(i)))
	key, err := crypto.ToECDSA(seed)
	if err != nil {
		// Reached only if the hash is zero or not below the group order.
		return Account{}, fmt.Errorf("devchain: dev account %d: %w", i, err)
	}
	return Account{Index: i, Address: crypto.PubkeyToAddress(key.PublicKey), Key: key}, nil
}

// DevAccounts derives dev accounts 0 to n-1.
func DevAccounts(n int) ([]Account, error) {
	accounts := make([]Account, 0, n)
	for i := range n {
		a, err := DevAccount(i)
		if err != nil {
			return nil, err
		}
		accounts = append(accounts, a)
	}
	return accounts, nil
}
