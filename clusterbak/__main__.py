from clusterbak.cli.app import main

main()
