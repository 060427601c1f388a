# Entry point after boot.py. otaboot (never updated over the air) picks the
# application folder, finishes an interrupted swap and rolls back a version that
# failed its trial; all other logic is in app.py, compiled and checked like the rest.
import otaboot

otaboot.select()
import app  # noqa: E402

app.main()
