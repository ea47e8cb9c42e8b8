from keras_astro.cli.command import main

main()
