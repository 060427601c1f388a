"""Claim codes: proof that whoever adds a device to the platform broker holds it.

On the platform broker device ids form one namespace shared by every tenant, and a
ps1 id (ESP- and six hex digits of the MAC) can be guessed. Without a proof, adding
an id told another tenant's device from a free one ("already registered"), and
anybody could register an id first and so block its real owner.

The claim code of a device is derived from its id with a key the platform and the
factory share (DEVICE_CLAIM_KEY):

    code = Crockford base32 of the first 60 bits of
           HMAC-SHA256(key, "poolsaas-claim-v1:" + device id)

shown as XXXX-XXXX-XXXX. The factory prints it on the device's label and writes it
into the device, whose set-up page shows it; the device never holds the key. The
server verifies a code without any registry. v3.1 devices in the field have no code
printed: the platform operator hands one out (`manage.py device_claim_code`) once
the owner has shown they hold the device. A tenant's own broker needs no code: its
namespace is the tenant's alone. docs/protocol.md, "Claiming a device", has the rule.
"""

from __future__ import annotations

import hashlib
import hmac

from django.conf import settings

# Crockford's alphabet: no I, L, O or U, so that a code read off a label survives.
ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_READ_AS = str.maketrans({"O": "0", "I": "1", "L": "1"})
CODE_LENGTH = 12  # 60 bits
CONTEXT = b"poolsaas-claim-v1:"


def _key() -> bytes:
    key = settings.DEVICE_CLAIM_KEY
    if key:
        return key.encode("utf-8")
    # Development and tests: a key of this installation's own. Production sets the
    # factory's key, or no printed label would match.
    return hmac.new(
        settings.SECRET_KEY.encode("utf-8"), b"poolsaas-device-claim", hashlib.sha256
    ).digest()


def claim_code_for(device_id: str) -> str:
    """The claim code of a device id, as printed: XXXX-XXXX-XXXX."""
    digest = hmac.new(_key(), CONTEXT + device_id.encode("utf-8"), hashlib.sha256)
    number = int.from_bytes(digest.digest()[:8], "big") >> (64 - 5 * CODE_LENGTH)
    chars = "".join(
        ALPHABET[(number >> (5 * (CODE_LENGTH - 1 - i))) & 31]
        for i in range(CODE_LENGTH)
    )
    return "-".join(chars[i : i + 4] for i in range(0, CODE_LENGTH, 4))


def claim_code_normalise(code: object) -> str:
    """What the user typed, as compared: upper case, no spaces or dashes, and the
    letters people confuse with digits read as those digits."""
    if not isinstance(code, str):
        return ""
    return "".join(c for c in code.upper() if c not in " -\t").translate(_READ_AS)


def claim_code_matches(*, device_id: str, code: object) -> bool:
    """Does `code` prove the holder has the device `device_id`? Constant time."""
    expected = claim_code_for(device_id).replace("-", "")
    return hmac.compare_digest(claim_code_normalise(code), expected)
