from govml.cli import main

main()
