package rpc

import (
	"context"
	"encoding/json"
	"fmt"
	"math/big"

	"github.com/custos-wallet/custos/chain"
	ethereum "github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/core/types"
)

// TransactionArgs are the arguments of eth_sendTransaction and
// eth_signTransaction, named as go-ethereum names them. Every field but From
// may be left out and is filled from upstream.
type TransactionArgs struct {
	From                 *common.Address `json:"from"`
	To                   *common.Address `json:"to"`
	Gas                  *hexutil.Uint64 `json:"gas"`
	GasPrice             *hexutil.Big    `json:"gasPrice"`
	MaxFeePerGas         *hexutil.Big    `json:"maxFeePerGas"`
	MaxPriorityFeePerGas *hexutil.Big    `json:"maxPriorityFeePerGas"`
	Value                *hexutil.Big    `json:"value"`
	Nonce                *hexutil.Uint64 `json:"nonce"`
	// Data and Input are the same; go-ethereum takes both for old clients.
	Data       *hexutil.Bytes    `json:"data"`
	Input      *hexutil.Bytes    `json:"input"`
	AccessList *types.AccessList `json:"accessList,omitempty"`
	ChainID    *hexutil.Big      `json:"chainId,omitempty"`
	Type       *hexutil.Uint64   `json:"type,omitempty"`

	// Present only to refuse them: ignoring them would sign another
	// transaction than the one asked for.
	BlobHashes        []common.Hash     `json:"blobVersionedHashes,omitempty"`
	AuthorizationList []json.RawMessage `json:"authorizationList,omitempty"`
}

func (a *TransactionArgs) data() ([]byte, error) {
	switch {
	case a.Data != nil && a.Input != nil && string(*a.Data) != string(*a.Input):
		return nil, invalidf(`both "data" and "input" are set and differ`)
	case a.Input != nil:
		return *a.Input, nil
	case a.Data != nil:
		return *a.Data, nil
	}
	return nil, nil
}

// check validates what needs no upstream call: from is one of the wallet's
// accounts, the chain id is upstream's, and nothing unsupported is asked.
func (s *Server) check(ctx context.Context, a *TransactionArgs) (common.Address, error) {
	if a.From == nil {
		return common.Address{}, invalidf(`missing "from"`)
	}
	if err := s.checkAccount(ctx, *a.From); err != nil {
		return common.Address{}, err
	}
	if a.ChainID != nil && a.ChainID.ToInt().Cmp(s.chainID) != 0 {
		return common.Address{}, invalidf("chain id %d is not the upstream chain's %d", a.ChainID.ToInt(), s.chainID)
	}
	if len(a.BlobHashes) > 0 {
		return common.Address{}, invalidf("%v", chain.ErrBlobTx)
	}
	if len(a.AuthorizationList) > 0 {
		return common.Address{}, invalidf("set-code transactions (authorizationList) are not supported here")
	}
	if a.Type != nil && *a.Type > types.DynamicFeeTxType {
		return common.Address{}, invalidf("transaction type %d is not supported here", *a.Type)
	}
	if a.GasPrice != nil && (a.MaxFeePerGas != nil || a.MaxPriorityFeePerGas != nil) {
		return common.Address{}, invalidf("both gasPrice and maxFeePerGas or maxPriorityFeePerGas are set")
	}
	if a.GasPrice != nil && a.Type != nil && *a.Type == types.DynamicFeeTxType {
		return common.Address{}, invalidf("gasPrice is set on a dynamic-fee (type 2) transaction")
	}
	data, err := a.data()
	if err != nil {
		return common.Address{}, err
	}
	if a.To == nil && len(data) == 0 {
		return common.Address{}, invalidf("contract creation without data")
	}
	return *a.From, nil
}

// checkAccount refuses an address the wallet does not sign for.
func (s *Server) checkAccount(ctx context.Context, from common.Address) error {
	accts, err := s.wallet.Accounts(ctx)
	if err != nil {
		return fmt.Errorf("list accounts: %w", err)
	}
	for _, a := range accts {
		if a == from {
			return nil
		}
	}
	return invalidf("unknown account %s: the wallet does not sign for it", from.Hex())
}

// fill sets the fees and gas left out, from upstream. A caller's gasPrice
// keeps the transaction legacy (or access-list); otherwise it is dynamic-fee
// with go-ethereum's default cap of twice the base fee plus the tip.
func (s *Server) fill(ctx context.Context, a *TransactionArgs) error {
	legacy := a.GasPrice != nil || (a.Type != nil && *a.Type < types.DynamicFeeTxType)
	if legacy && a.GasPrice == nil {
		p, err := s.eth.SuggestGasPrice(ctx)
		if err != nil {
			return fmt.Errorf("upstream gas price: %w", err)
		}
		a.GasPrice = (*hexutil.Big)(p)
	}
	if !legacy {
		if a.MaxPriorityFeePerGas == nil {
			tip, err := s.eth.SuggestGasTipCap(ctx)
			if err != nil {
				return fmt.Errorf("upstream priority fee: %w", err)
			}
			a.MaxPriorityFeePerGas = (*hexutil.Big)(tip)
		}
		if a.MaxFeePerGas == nil {
			h, err := s.eth.HeaderByNumber(ctx, nil)
			if err != nil {
				return fmt.Errorf("upstream head: %w", err)
			}
			if h.BaseFee == nil {
				return fmt.Errorf("upstream head %v has no base fee: set gasPrice", h.Number)
			}
			fee := new(big.Int).Add(new(big.Int).Mul(h.BaseFee, big.NewInt(2)), a.MaxPriorityFeePerGas.ToInt())
			a.MaxFeePerGas = (*hexutil.Big)(fee)
		}
		if a.MaxPriorityFeePerGas.ToInt().Cmp(a.MaxFeePerGas.ToInt()) > 0 {
			return invalidf("maxPriorityFeePerGas %v above maxFeePerGas %v", a.MaxPriorityFeePerGas.ToInt(), a.MaxFeePerGas.ToInt())
		}
	}
	if a.Gas == nil {
		data, _ := a.data()
		msg := ethereum.CallMsg{From: *a.From, To: a.To, Data: data}
		if a.Value != nil {
			msg.Value = a.Value.ToInt()
		}
		if a.AccessList != nil {
			msg.AccessList = *a.AccessList
		}
		if legacy {
			msg.GasPrice = a.GasPrice.ToInt()
		} else {
			msg.GasFeeCap, msg.GasTipCap = a.MaxFeePerGas.ToInt(), a.MaxPriorityFeePerGas.ToInt()
		}
		g, err := s.eth.EstimateGas(ctx, msg)
		if err != nil {
			return fmt.Errorf("upstream gas estimate: %w", err)
		}
		a.Gas = (*hexutil.Uint64)(&g)
	}
	return nil
}

// unsigned builds the transaction of filled args with nonce.
func (s *Server) unsigned(a *TransactionArgs, nonce uint64) *types.Transaction {
	data, _ := a.data()
	value := new(big.Int)
	if a.Value != nil {
		value = a.Value.ToInt()
	}
	var al types.AccessList
	if a.AccessList != nil {
		al = *a.AccessList
	}
	switch {
	case a.GasPrice != nil && (a.AccessList != nil || (a.Type != nil && *a.Type == types.AccessListTxType)):
		return types.NewTx(&types.AccessListTx{ChainID: s.chainID, Nonce: nonce, GasPrice: a.GasPrice.ToInt(),
			Gas: uint64(*a.Gas), To: a.To, Value: value, Data: data, AccessList: al})
	case a.GasPrice != nil:
		return types.NewTx(&types.LegacyTx{Nonce: nonce, GasPrice: a.GasPrice.ToInt(),
			Gas: uint64(*a.Gas), To: a.To, Value: value, Data: data})
	}
	return types.NewTx(&types.DynamicFeeTx{ChainID: s.chainID, Nonce: nonce, GasTipCap: a.MaxPriorityFeePerGas.ToInt(),
		GasFeeCap: a.MaxFeePerGas.ToInt(), Gas: uint64(*a.Gas), To: a.To, Value: value, Data: data, AccessList: al})
}

// signTx has the wallet sign tx as from and returns the signed transaction.
func (s *Server) signTx(ctx context.Context, from common.Address, tx *types.Transaction) (*types.Transaction, error) {
	raw, err := tx.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("encode transaction: %w", err)
	}
	p, err := chain.ParseTransaction(s.chainID, raw)
	if err != nil {
		return nil, invalidf("%w", err)
	}
	sig, err := s.wallet.Sign(ctx, from, p)
	if err != nil {
		return nil, err
	}
	return p.SignedTransaction(sig, from)
}

// send fills, signs and broadcasts a transaction, holding from's turn from
// choosing the nonce to upstream's answer.
func (s *Server) send(ctx context.Context, a TransactionArgs) (common.Hash, error) {
	tx, err := s.fillAndSign(ctx, a, true)
	if err != nil {
		return common.Hash{}, err
	}
	return tx.Hash(), nil
}

// fillAndSign checks, fills and signs a; with broadcast it also sends the
// signed transaction upstream before giving up the address's turn.
func (s *Server) fillAndSign(ctx context.Context, a TransactionArgs, broadcast bool) (*types.Transaction, error) {
	from, err := s.check(ctx, &a)
	if err != nil {
		return nil, err
	}
	if err := s.fill(ctx, &a); err != nil {
		return nil, err
	}
	l, err := s.nonces.acquire(ctx, from, func(ctx context.Context) (uint64, error) {
		n, err := s.eth.PendingNonceAt(ctx, from)
		if err != nil {
			return 0, fmt.Errorf("upstream pending nonce of %s: %w", from.Hex(), err)
		}
		return n, nil
	})
	if err != nil {
		return nil, err
	}
	defer l.release()
	nonce := l.nonce
	if a.Nonce != nil {
		// A lower nonce replaces a transaction still in the pool; a higher
		// one would leave a gap that every later send waits behind.
		if uint64(*a.Nonce) > l.nonce {
			return nil, invalidf("nonce %d is ahead of %s's next nonce %d: it would leave a gap", uint64(*a.Nonce), from.Hex(), l.nonce)
		}
		nonce = uint64(*a.Nonce)
	}
	signed, err := s.signTx(ctx, from, s.unsigned(&a, nonce))
	if err != nil {
		return nil, err
	}
	if !broadcast {
		return signed, nil
	}
	if err := s.eth.SendTransaction(ctx, signed); err != nil {
		return nil, fmt.Errorf("upstream eth_sendRawTransaction: %w", err)
	}
	l.use(nonce)
	return signed, nil
}
