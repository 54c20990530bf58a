"""`retrain init`: a new project from a template, ready to run on small real data that a package ships.

    templates/common/          what every template writes: the validate, features, deploy and monitor
                               notebooks, the data's contract, the workflows, Makefile, .gitignore, pre-commit
    templates/<name>/          what makes the template: template.json (its description and data), its
                               pipeline.yaml, README.md, model module and the train and evaluate notebooks;
                               a file here replaces the common file of the same path

`scaffold` plans the files (the template's own, the data cut from the package's file by `data`, and
requirements.txt naming the runner as `source` finds it installed) and writes them, never over a file that
exists. The templates are the projects' code, not the runner's: nothing here knows what they predict.
"""
