from bench.cli import main

if __name__ == "__main__":  # guarded: multiprocessing's spawn re-imports the main module in each worker
    main()
