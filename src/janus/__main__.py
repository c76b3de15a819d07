from janus.cli import main

main()
