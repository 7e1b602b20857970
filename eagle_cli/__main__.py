from eagle_cli.cli import main

main()
