# Entry point after boot.py. otaboot (never updated over the air) picks the
# application folder, finishes an interrupted swap and rolls back a version that
# failed its trial; all other logic is in app.py, compiled and checked like the rest.
import otaboot

if otaboot.select().get("phase") != "trial":
    # Not needed again unless an update comes (the updater imports it then): its
    # heap is the application's. On trial its timer callback still holds it.
    import sys

    del sys.modules["otaboot"]
del otaboot
import app  # noqa: E402

app.main()
