"""The claim code of a device, for the flashing station (docs/protocol.md 7.1).

    python firmware/tools/claim.py --key-file factory.key --device-id ESP-A1B2C3 \
        [--out claim.txt]

prints the code as the label shows it (BBNR-MAGF-JV94) and, with --out, writes what
the board keeps in flash next to its configuration: the 12 characters, no dashes. The
same derivation as the server's devices/services/claims.py, in the standard library
only, so the station needs no Django. The key file holds the factory key
(DEVICE_CLAIM_KEY) as text; a trailing newline is ignored. The key never goes to the
board.
"""

import argparse
import hashlib
import hmac
import sys

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
CONTEXT = b"poolsaas-claim-v1:"
LENGTH = 12  # 60 bits


def claim_code(key, device_id):
    """The 12 characters of the claim code of device_id under the factory key."""
    digest = hmac.new(key, CONTEXT + device_id.encode("utf-8"), hashlib.sha256)
    number = int.from_bytes(digest.digest()[:8], "big") >> (64 - 5 * LENGTH)
    return "".join(
        ALPHABET[(number >> (5 * (LENGTH - 1 - i))) & 31] for i in range(LENGTH)
    )


def grouped(code):
    return "-".join(code[i : i + 4] for i in range(0, len(code), 4))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--key-file", required=True)
    ap.add_argument("--device-id", required=True)
    ap.add_argument("--out", help="write claim.txt here (12 characters, no dashes)")
    args = ap.parse_args(argv)
    with open(args.key_file, encoding="utf-8") as f:
        key = f.read().rstrip("\r\n")
    if not key:
        ap.error("the key file is empty")
    device_id = args.device_id.strip()
    allowed = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
    if not 1 <= len(device_id) <= 64 or not set(device_id) <= allowed:
        ap.error(f"not a device id: {device_id!r}")
    code = claim_code(key.encode("utf-8"), device_id)
    if args.out:
        with open(args.out, "w", encoding="ascii") as f:
            f.write(code)
    print(f"Device id: {device_id}")
    print(f"Claim code: {grouped(code)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
