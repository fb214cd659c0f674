from metering.cli import main

# Guarded: the dev host's feed workers are spawned processes, which import this module again (as __mp_main__).
if __name__ == "__main__":
    main()
