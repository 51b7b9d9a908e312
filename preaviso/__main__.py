from preaviso.cli import main

main()
