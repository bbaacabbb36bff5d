#!/usr/bin/python3
"""Known answers for the MSE key derivation (src/peer/mse/crypto.rs,
key_derivation_known_answers), computed independently of the Rust code:
Python's pow() for the 768-bit Diffie-Hellman, hashlib.sha1 for the hashes,
and a textbook RC4 with the first 1024 keystream bytes dropped.

Inputs: Xa = 0x01 * 20, Xb = 0x02 * 20 (160-bit private exponents),
SKEY = 0xAA * 20. Prints the Rust constants.
"""
import hashlib
P = int("FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A63A36210000000000090563", 16)
def b96(n): return n.to_bytes(96, 'big')
def sha1(*p):
    h = hashlib.sha1()
    for x in p: h.update(x)
    return h.digest()
def rc4(key, n, drop=1024):
    S = list(range(256)); j = 0
    for i in range(256):
        j = (j + S[i] + key[i % len(key)]) & 255
        S[i], S[j] = S[j], S[i]
    i = j = 0; out = []
    for _ in range(drop + n):
        i = (i + 1) & 255; j = (j + S[i]) & 255
        S[i], S[j] = S[j], S[i]
        out.append(S[(S[i] + S[j]) & 255])
    return bytes(out[drop:])
xa = int.from_bytes(bytes([1]*20), 'big'); xb = int.from_bytes(bytes([2]*20), 'big')
ya = pow(2, xa, P); yb = pow(2, xb, P)
s = pow(yb, xa, P); assert s == pow(ya, xb, P)
S = b96(s); skey = bytes([0xAA]*20)
ka = sha1(b"keyA", S, skey); kb = sha1(b"keyB", S, skey)
r2 = sha1(b"req2", skey); r3 = sha1(b"req3", S)
vals = dict(YA=b96(ya).hex(), YB=b96(yb).hex(), S=S.hex(), REQ1=sha1(b"req1", S).hex(),
  REQ2_XOR_REQ3=bytes(a ^ b for a, b in zip(r2, r3)).hex(), KEY_A=ka.hex(), KEY_B=kb.hex(),
  VC_A=rc4(ka, 8).hex(), VC_B=rc4(kb, 8).hex())
for k, v in vals.items(): print(f'    const KAT_{k}: &str = "{v}";')
