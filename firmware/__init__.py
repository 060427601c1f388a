"""poolsaas ESP32 firmware (MicroPython) and its PC simulator.

On the board every module sits flat in the filesystem root; on the PC the same files
form the `firmware` package so the bridge can `from firmware import protocol`.
"""
