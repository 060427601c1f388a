# Entry point after boot.py. All logic is in app.py, compiled and checked like the rest.
import app

app.main()
