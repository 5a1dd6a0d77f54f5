"""RPBench-Auto (boson-ai): pairwise role-play dialogues in which the judge plays the user."""
