from gpushop.cli.app import main

main()
