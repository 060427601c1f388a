# Runs first on every reset. Kept tiny: anything that can fail lives in app.py,
# where the boot counter sees it.
import gc

try:
    import esp

    esp.osdebug(None)  # keep the ROM debug chatter off UART0
except ImportError:
    pass
gc.collect()
