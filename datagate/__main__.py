from datagate.cli import run

run()
