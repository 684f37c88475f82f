from goalworker.cli import main

main()
